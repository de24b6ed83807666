"""Every method exitflow runs, each declared once, where its flow lives.

A method's flows module registers it::

    register(Method(
        name="hashee", summary="HashEE: tokens exit at layers fixed by a hash table",
        model_module="models.hashee", config_section="hashee",
        cell=hashee_cell,                                   # its comparison cell
        commands=(hashee_command, hashee_study_command),    # its CLI commands
        stages=("hashee",)))                                # the dvc.yaml stages its flows record

and everything else is derived from the registrations: the comparison's method list
(``comparison_methods``), the ``exitflow`` commands (``flows/cli.py``) and the stage list
(``dvc_stages``; ``tests/flows/test_layout.py`` checks it against ``dvc.yaml``).
``load_methods`` imports each module of ``METHOD_MODULES`` once; a new method adds its module
there and registers itself in it.

**Comparison cells.** ``cell(ctx, variant)`` trains and evaluates one comparison variant of the
method on the unit's context (its task, seed, learning rate and artifacts tree; no MLflow) and
returns a ``tasks.compare`` cell summary. ``variants(params)`` names the method's variants
(default: the method's own name; BERxiT: one per objective; the static baselines: one per
``compare.static_layers`` depth). ``regression=False`` marks a method that cannot do regression
(the comparison reports it n/a there); ``baseline=True`` marks the static line every other
method is compared with, always in the grid.

**Commands.** Each command is a function ``(params_path, overrides, **options)`` whose extra
parameters carry ``typer.Option`` defaults; its name (``_`` -> ``-``, without ``_command``)
is the command's, its docstring the help.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from tasks.config import ConfigError, Params

METHOD_MODULES = ("flows.pipeline", "flows.static", "flows.hashee", "flows.consistentee", "flows.past_future",
                  "flows.leco", "flows.generate", "flows.learnability")


@dataclass(frozen=True)
class Method:
    """One method: where its model lives, what it reads, how it runs (see the module docstring)."""

    name: str
    summary: str  # one line, for the command list and the docs
    model_module: str | None = None  # its ``models/`` module (paper map, equations)
    config_section: str | None = None  # its ``params.yaml`` section
    cell: Callable | None = None  # (ctx, variant) -> cell summary; None: not in the comparison
    variants: Callable[[Params], list[str]] | None = None  # default: [name]
    regression: bool = True
    baseline: bool = False
    commands: tuple[Callable, ...] = ()
    stages: tuple[str, ...] = ()  # dvc.yaml stages its flows record (recorded on demand unless in DEFAULT_STAGES)

    def comparison_variants(self, params: Params) -> list[str]:
        if self.cell is None:
            return []
        return self.variants(params) if self.variants is not None else [self.name]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a name registers once)."""
    if method.name in METHODS and METHODS[method.name] != method:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def load_methods() -> dict[str, Method]:
    """Every registered method (importing each method's flows module once)."""
    for module in METHOD_MODULES:
        importlib.import_module(module)
    return METHODS


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
        return self.method.cell(ctx, self.name)


def comparison_variants(params: Params) -> dict[str, Variant]:
    """Every comparison variant of every registered method with a cell, by name."""
    return {v: Variant(v, m) for m in load_methods().values() for v in m.comparison_variants(params)}


def comparison_methods(params: Params) -> list[Variant]:
    """``compare.methods`` (``all``: every variant) checked against the registry, then the
    baselines (the static line), which are always in the grid."""
    variants = comparison_variants(params)
    chosen = [v for v in variants.values() if not v.baseline]
    if params.compare.methods != ["all"]:
        unknown = [m for m in params.compare.methods if m not in variants or variants[m].baseline]
        if unknown:
            raise ConfigError(f"compare.methods: unknown {unknown}; registered: "
                              f"{', '.join(v.name for v in chosen)} (or [all])")
        chosen = [variants[m] for m in params.compare.methods]
    return chosen + [v for v in variants.values() if v.baseline]


def commands() -> list[tuple[str, Callable]]:
    """``(command name, function)`` of every registered method's commands, in registration order."""
    out = []
    for method in load_methods().values():
        for fn in method.commands:
            out.append((fn.__name__.removesuffix("_command").replace("_", "-"), fn))
    return out


def dvc_stages() -> set[str]:
    """Every ``dvc.yaml`` stage a registered method's flows record."""
    return {stage for method in load_methods().values() for stage in method.stages}
