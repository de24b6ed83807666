"""The methods ``exitflow compare`` runs, by registration.

A method's flow module registers one *cell runner* per method name::

    @register_method("hashee")
    def hashee_cell(params: Params) -> dict: ...

``params`` is the cell's own copy of the params: ``train.task``, ``seed`` and ``train.lr`` set,
``artifacts_dir`` a folder of the cell's learning rate, so every method's usual ``Layout``
folders are the cell's. The runner trains and evaluates with the cached tasks that already exist
(no MLflow: the comparison logs one nested run per cell from the flow) and returns a
``tasks.compare`` cell summary (``exit_cell_summary`` / ``hashee_cell_summary``).

``regression=False`` marks a method that cannot do regression (its exits or criterion need
classes): the comparison reports it n/a on such tasks instead of dropping it. The comparison
flow never names a method: ``load_methods`` imports ``METHOD_MODULES`` (one line per method's
module, as ``models/__init__.py`` does for exit modules), so a new method joins the grid by
registering itself in its module and adding that module's line there. Names ``static-<k>`` are
the comparison's static baselines and cannot be registered.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.layout import TrainedDirs, common
from tasks.caching import run_cached
from tasks.compare import exit_cell_summary
from tasks.config import Params, TrainConfig
from tasks.evaluate import evaluate_exits
from tasks.train import train_multi_exit

METHOD_MODULES = ("flows.pipeline", "flows.hashee", "flows.consistentee", "flows.past_future", "flows.leco")


@dataclass(frozen=True)
class CompareMethod:
    """A registered method: ``run(params) -> cell summary``; ``regression``: it can do regression."""

    name: str
    run: Callable[[Params], dict]
    regression: bool = True


COMPARE_METHODS: dict[str, CompareMethod] = {}


def register_method(name: str, regression: bool = True):
    """Decorator registering a cell runner under ``name`` (a method of ``compare.methods``)."""

    if name.startswith("static-"):
        raise ValueError(f"method name {name!r}: static-<k> names the comparison's static baselines")

    def add(run):
        COMPARE_METHODS[name] = CompareMethod(name, run, regression)
        return run

    return add


def load_methods() -> dict[str, CompareMethod]:
    """Every registered method (importing each method's flow module once)."""
    for module in METHOD_MODULES:
        importlib.import_module(module)
    return COMPARE_METHODS


def evaluate_cell(params: Params, checkpoint: Path, out_dir: Path, train: TrainConfig, criteria: list[str] | None = None,
                  fixed_thresholds: dict | None = None) -> dict:
    """The cell summary of a trained multi-exit ``checkpoint``: sweep ``criteria`` (default
    ``evaluate.criteria``) and time the dev operating points at ``compare.timing_batch_size`` (cached)."""
    bs = params.compare.timing_batch_size
    evaluate = params.evaluate.model_copy(update={"timing_batch_sizes": [bs],
                                                  **({"criteria": criteria} if criteria is not None else {})})
    evaluated = run_cached(evaluate_exits, out_dir=out_dir, evaluate=evaluate, backbone=params.backbone, train=train,
                           ckpt_dir=checkpoint, fixed_thresholds=fixed_thresholds, **common(params))
    return exit_cell_summary(evaluated, checkpoint, bs)


def exits_cell(params: Params, dirs: TrainedDirs, train: TrainConfig, objective: str,
               criteria: list[str] | None = None) -> dict:
    """Train with ``objective`` (cached) into ``dirs.train``, then ``evaluate_cell`` into ``dirs.evaluate``."""
    trained = run_cached(train_multi_exit, out_dir=dirs.train, train=train, backbone=params.backbone, strategy=objective,
                         **common(params))
    return evaluate_cell(params, trained["checkpoint"], dirs.evaluate, train, criteria)
