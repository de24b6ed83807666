"""The run context: what a flow builds once from ``params.yaml`` and passes down to every step.

A flow opens with ``start_flow`` (load and validate the params -> point MLflow at the flow's
experiment -> prepare the data every step reads) and hands the ``RunContext`` it returns to its
steps; nothing below a flow reloads the params or rebuilds the ``Layout``::

    ctx = start_flow(params_path, overrides, experiment="exitflow-hashee")
    with ctx.parent_run("hashee-frequency-b6", ("seed", "backbone", "train", "hashee"), method="hashee"):
        run_hashee(ctx, ctx.params.hashee, "default")

``ctx.inputs`` are the arguments every training and evaluation task takes (``StepInputs``);
``ctx.for_task`` and ``ctx.with_params`` give the context of another task or of changed params
(the comparison's units, Past-Future and LECO on several tasks) with its own layout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.layout import Layout
from flows.tracking import parent_run, use_experiment
from config.params import ConfigError, Params, load_params
from tasks.data import load_meta, prepare_data
from tasks.locking import folder_lock


@dataclass(frozen=True)
class StepInputs:
    """The arguments every training and evaluation task takes, whatever the method."""

    data_dir: Path  # the prepared splits (``data.out_dir``)
    cache_dir: Path  # the shared token cache (not an output)
    seed: int
    device: str  # ``params.device``: auto | cpu | cuda

    def kwargs(self) -> dict:
        """As keyword arguments of a task call (``run_cached(task, ..., **inputs.kwargs())``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class RunContext:
    """One flow run's params and the layout of its (task, seed), built once and passed down."""

    params: Params
    layout: Layout

    @classmethod
    def from_params(cls, params: Params) -> RunContext:
        return cls(params, Layout.from_params(params))

    @property
    def inputs(self) -> StepInputs:
        return StepInputs(data_dir=self.layout.data, cache_dir=self.layout.token_cache, seed=self.params.seed,
                          device=self.params.device)

    @property
    def task_spec(self) -> dict:
        """The prepared ``train.task``'s spec (metric, label type, labels)."""
        return load_meta(self.layout.data, self.params.train.task)["spec"]

    @property
    def is_regression(self) -> bool:
        return self.task_spec["label_type"] == "float"

    def with_params(self, params: Params) -> RunContext:
        """The context of changed params (its layout follows them)."""
        return RunContext.from_params(params)

    def for_task(self, task: str) -> RunContext:
        """The same run on ``task`` (``train.task`` replaced), with that task's layout."""
        return self.with_params(self.params.model_copy(update={"train": self.params.train.model_copy(update={"task": task})}))

    def check_prepared(self, tasks: list[str], key: str) -> None:
        """Every name in ``tasks`` (the value of params key ``key``) is a task ``prepare`` writes."""
        data = self.params.data
        missing = [name for name in tasks if name not in data.tasks and name not in data.custom]
        if missing:
            raise ConfigError(f"{key}: {missing} are not prepared tasks; data.tasks has {', '.join(data.tasks)}")

    def parent_run(self, run_name: str, sections: tuple[str, ...], method: str, description: str | None = None,
                   identity: dict | None = None):
        """The flow's parent MLflow run (``flows.tracking.parent_run``) over this context's params:
        provenance on every run below it, the shared identity params, the leaderboard on it."""
        return parent_run(self.params, run_name, sections, method, description, identity)


def prepare_task_data(params: Params, tasks: list[str] | None = None) -> dict:
    """The data step every flow starts with: validated Parquet splits under ``data.out_dir``
    for ``data.tasks`` (or ``tasks``) and every ``data.custom`` task."""
    data = params.data if tasks is None else params.data.model_copy(update={"tasks": tasks})
    out_dir = Layout.from_params(params).data
    with folder_lock(out_dir):  # commands started together: one rewrites data/ at a time
        return prepare_data(data, params.path(params.data.source_dir), out_dir, params.seed)


def load_context(params_path: str | Path, overrides: list[str] | None = None, profile: str | None = None) -> RunContext:
    """The validated params (with ``profile`` and ``key=value`` overrides) and their layout."""
    return RunContext.from_params(load_params(params_path, overrides or [], profile))


def start_flow(params_path: str | Path, overrides: list[str] | None, experiment: str | None = None,
               profile: str | None = None, data_tasks: list[str] | None = None, prepare: bool = True,
               check: Callable[[RunContext], None] | None = None) -> RunContext:
    """The opening of every flow: load the params -> MLflow experiment ``experiment`` (default
    ``mlflow.experiment``; failing fast, naming the URI, when a tracking server is down) ->
    prepare the data (``data_tasks``: instead of ``data.tasks``; ``prepare=False``: a DVC stage
    that only reads ``data/``). ``check(ctx)`` runs first: a flow's own checks of its params.
    Returns the run's context."""
    ctx = load_context(params_path, overrides, profile)
    if check is not None:
        check(ctx)
    use_experiment(ctx.params, experiment or ctx.params.mlflow.experiment)
    if prepare:
        prepare_task_data(ctx.params, data_tasks)
    return ctx
