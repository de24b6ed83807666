"""The step every method shares: train a multi-exit model, then evaluate it (both cached).

A method describes the model it trains as an ``ExitModel`` (training config, objective, folders,
evaluation config); ``train_then_evaluate`` runs the two cached tasks for it, the same way for
the default pipeline, every method's flow and the comparison's cells. Logging stays with the
caller (``flows.tracking.log_exit_run`` inside an MLflow run; nothing in a comparison unit).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from flows.context import RunContext
from flows.layout import TrainedDirs
from tasks.caching import run_cached, run_shared
from tasks.compare import exit_cell_summary
from config.params import EvaluateConfig, TrainConfig
from tasks.evaluate import evaluate_exits
from tasks.metric_logger import MetricLogger
from tasks.train import train_multi_exit


@dataclass(frozen=True)
class ExitModel:
    """One multi-exit model of a method: how it trains, where it lives, how it is evaluated."""

    train: TrainConfig
    objective: str  # a ``models.objectives.OBJECTIVES`` name (joint, weighted, two_stage, alternating, single)
    dirs: TrainedDirs
    evaluate: EvaluateConfig
    fixed_thresholds: dict[str, float] | None = None  # criterion -> threshold evaluated beside the sweep

    def timed_at(self, batch_size: int) -> ExitModel:
        """The same model with wall-clock measured at ``batch_size`` only (a comparison cell)."""
        return replace(self, evaluate=self.evaluate.model_copy(update={"timing_batch_sizes": [batch_size]}))


@dataclass(frozen=True)
class TrainedModel:
    """What ``train_then_evaluate`` returns: the two tasks' results."""

    trained: dict  # ``train_multi_exit``'s result (checkpoint, history, dev scores)
    evaluated: dict  # ``evaluate_exits``'s result (summary, curves, metrics, timing, plots)

    @property
    def checkpoint(self) -> Path:
        return Path(self.trained["checkpoint"])


def train_exit_model(ctx: RunContext, train: TrainConfig, objective: str, out_dir: Path,
                     logger: MetricLogger | None = None, share: bool = False, **options) -> dict:
    """``train_multi_exit`` (cached) into ``out_dir``; ``options``: its optional arguments
    (``num_layers``, ``hash_table_dir``, ``dynamics_evals_per_epoch``). ``share``: a model with the
    same inputs and code already trained in another folder of this artifacts tree is reused
    (``tasks.caching.run_shared``; the caller must read the checkpoint from the returned result)."""
    if share:
        return run_shared(train_multi_exit, out_dir=out_dir, index_dir=ctx.layout.shared_trainings, train=train,
                          backbone=ctx.params.backbone, strategy=objective, logger=logger, **options, **ctx.inputs.kwargs())
    return run_cached(train_multi_exit, out_dir=out_dir, train=train, backbone=ctx.params.backbone, strategy=objective,
                      logger=logger, **options, **ctx.inputs.kwargs())


def evaluate_exit_model(ctx: RunContext, model: ExitModel, checkpoint: Path, logger: MetricLogger | None = None) -> dict:
    """``evaluate_exits`` (cached) of ``checkpoint`` into ``model.dirs.evaluate``."""
    return run_cached(evaluate_exits, out_dir=model.dirs.evaluate, evaluate=model.evaluate, backbone=ctx.params.backbone,
                      train=model.train, ckpt_dir=checkpoint, logger=logger, fixed_thresholds=model.fixed_thresholds,
                      **ctx.inputs.kwargs())


def train_then_evaluate(ctx: RunContext, model: ExitModel, logger: MetricLogger | None = None) -> TrainedModel:
    """Train ``model`` (cached), then evaluate its checkpoint (cached)."""
    trained = train_exit_model(ctx, model.train, model.objective, model.dirs.train, logger)
    return TrainedModel(trained, evaluate_exit_model(ctx, model, Path(trained["checkpoint"]), logger))


def compare_evaluate(ctx: RunContext, criteria: list[str] | None = None, **updates) -> EvaluateConfig:
    """The evaluation of a comparison cell: ``evaluate`` with ``criteria`` (default
    ``evaluate.criteria``), timed at ``compare.timing_batch_size`` only."""
    return ctx.params.evaluate.model_copy(update={"timing_batch_sizes": [ctx.params.compare.timing_batch_size],
                                                  **({"criteria": criteria} if criteria is not None else {}), **updates})


def exit_model_cell(ctx: RunContext, model: ExitModel) -> dict:
    """A comparison cell of a multi-exit model: train, evaluate, summarise (``tasks.compare``)."""
    done = train_then_evaluate(ctx, model)
    return exit_cell_summary(done.evaluated, done.checkpoint, ctx.params.compare.timing_batch_size)


def evaluate_cell(ctx: RunContext, model: ExitModel, checkpoint: Path) -> dict:
    """A comparison cell of a model trained elsewhere (ConsistentEE's rounds): evaluate ``checkpoint``."""
    evaluated = evaluate_exit_model(ctx, model, checkpoint)
    return exit_cell_summary(evaluated, checkpoint, ctx.params.compare.timing_batch_size)
