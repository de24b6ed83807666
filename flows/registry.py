"""Every method exitflow runs, each declared once, in its own module of ``flows/methods/``.

A registration names what the method is made of and where its flow lives::

    register(Method(
        name="hashee", summary="HashEE: tokens exit at layers fixed by a hash table",
        model_module="models.hashee", config_section="hashee",
        flows_module="flows.hashee",          # its flow, steps and comparison cell
        cell="hashee_cell",                   # (ctx, variant) -> cell summary
        commands=(Command("hashee", "hashee_pipeline", "HashEE with the configured hash ..."),),
        stages=("hashee",),                   # the dvc.yaml stages its flows record
        order=20))

Everything else is derived from the registrations: the comparison's methods
(``comparison_methods``), the ``exitflow`` commands (``flows/cli.py``) and the stage list
(``dvc_stages``; ``tests/flows/test_pipeline.py`` checks it against ``dvc.yaml``). A new method
adds one module to ``flows/methods/`` (``load_methods`` imports every module there).

The registrations are light (functions are named, not imported), so listing the commands does not
import torch, Prefect or MLflow: ``exitflow --help`` stays instant, and a method's flows module
is imported when one of its commands or cells runs.

**Comparison cells.** ``cell(ctx, variant)`` trains and evaluates one comparison variant of the
method on a unit's context (its task, seed, learning rate and artifacts tree; no MLflow) and
returns a ``tasks.compare`` cell summary. ``variants(params)`` names the variants (default: the
method's own name; BERxiT: one per objective; the static baselines: one per
``compare.static_layers`` depth). ``regression=False`` marks a method that cannot do regression
(the comparison reports it n/a there); ``baseline=True`` marks the static line every other
method is compared with, always in the grid.

**Commands.** ``Command(name, function, help, options)``: the function, in ``flows_module``, is
called as ``function(params_path, overrides, **options)``; a string it returns is printed.
``options`` are ``Option(keyword, annotation, typer.Option(...))`` beside ``--params``/``--set``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

COMPARISON_STAGES = ("compare", "compare_standard")  # the comparison's own dvc.yaml stages (flows/compare.py, not a method)
DOCS_STAGE = "docs"  # the generated documentation pages (flows/docs.py, not a method)


@dataclass(frozen=True)
class Option:
    """A command-line option of a command: its keyword, type and ``typer.Option`` default."""

    keyword: str
    annotation: Any
    default: Any


@dataclass(frozen=True)
class Command:
    """An ``exitflow`` command: ``function`` (a name in the method's ``flows_module``) and its help."""

    name: str
    function: str
    help: str
    options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class Method:
    """One method: where its model and flow live, what it reads, how it runs (module docstring)."""

    name: str
    summary: str  # one line, for the docs and the comparison
    flows_module: str  # its flow, steps and comparison cell
    model_module: str | None = None  # its ``models/`` module (paper map, equations)
    config_section: str | None = None  # its ``params.yaml`` section
    cell: str | None = None  # (ctx, variant) -> cell summary; None: not in the comparison
    variants: str | None = None  # (params) -> variant names; None: [name]
    regression: bool = True
    baseline: bool = False
    commands: tuple[Command, ...] = ()
    stages: tuple[str, ...] = ()
    order: int = 100  # position in the comparison grid and the command list

    def function(self, name: str) -> Callable:
        """``name`` in the method's flows module (imported now)."""
        return getattr(importlib.import_module(self.flows_module), name)

    def comparison_variants(self, params) -> list[str]:
        if self.cell is None:
            return []
        return self.function(self.variants)(params) if self.variants is not None else [self.name]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a name registers once)."""
    if METHODS.get(method.name, method) != method:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def load_methods() -> dict[str, Method]:
    """Every registered method, in ``order`` (importing each module of ``flows/methods/`` once)."""
    import flows.methods

    for module in pkgutil.iter_modules(flows.methods.__path__):
        importlib.import_module(f"flows.methods.{module.name}")
    return dict(sorted(METHODS.items(), key=lambda kv: (kv[1].order, kv[0])))


@dataclass(frozen=True)
class Variant:
    """A comparison method name and the registered method that runs it."""

    name: str
    method: Method = field(compare=False)

    @property
    def regression(self) -> bool:
        return self.method.regression

    @property
    def baseline(self) -> bool:
        return self.method.baseline

    def run(self, ctx):
        """The cell summary of this variant on ``ctx`` (a comparison unit's context)."""
        return self.method.function(self.method.cell)(ctx, self.name)


def comparison_variants(params) -> dict[str, Variant]:
    """Every comparison variant of every registered method with a cell, by name."""
    return {v: Variant(v, m) for m in load_methods().values() for v in m.comparison_variants(params)}


def comparison_methods(params) -> list[Variant]:
    """``compare.methods`` (``all``: every variant) checked against the registry, then the
    baselines (the static line), which are always in the grid."""
    from config.params import ConfigError

    variants = comparison_variants(params)
    chosen = [v for v in variants.values() if not v.baseline]
    if params.compare.methods != ["all"]:
        unknown = [m for m in params.compare.methods if m not in variants or variants[m].baseline]
        if unknown:
            raise ConfigError(f"compare.methods: unknown {unknown}; registered: "
                              f"{', '.join(v.name for v in chosen)} (or [all])")
        chosen = [variants[m] for m in params.compare.methods]
    return chosen + [v for v in variants.values() if v.baseline]


def commands() -> list[tuple[Method, Command]]:
    """Every registered method's commands, in registration order."""
    return [(method, command) for method in load_methods().values() for command in method.commands]


def dvc_stages() -> set[str]:
    """Every ``dvc.yaml`` stage: the registered methods', the comparison's and the docs'."""
    return {*COMPARISON_STAGES, DOCS_STAGE} | {stage for method in load_methods().values() for stage in method.stages}
