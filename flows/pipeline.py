"""The default pipeline, the per-stage flows that ``dvc.yaml`` runs, and the BERxiT strategies.

``exitflow_pipeline`` reads like the algorithm: prepare data -> for each strategy (train a
multi-exit model, evaluate every criterion) -> HashEE -> ConsistentEE -> Past-Future ->
comparison report -> record outputs in DVC. Each step is a cached Prefect task; MLflow gets one
parent run with a nested run per strategy and per criterion. Artifact paths (also the
``dvc.yaml`` outs): ``flows/layout.py``.

A *strategy* is a multi-exit training objective of ``models.objectives`` (joint, weighted,
two_stage, BERxiT's alternating) with the exit criteria of ``evaluate.criteria`` (LTE with
``train.exit_scorer``); the strategy models of ``train.strategies`` are the default run's
multi-exit models, the baselines ConsistentEE and the report compare with.
"""

from __future__ import annotations

import mlflow
from prefect import flow

from flows.consistentee import run_consistentee, strategy_baselines
from flows.context import RunContext, load_context, prepare_task_data, start_flow
from flows.hashee import run_hashee
from flows.layout import TrainedDirs
from flows.past_future import run_default_past_future
from flows.steps import ExitModel, compare_evaluate, exit_model_cell, train_exit_model, train_then_evaluate
from flows.tracking import active_logger, log_exit_run, record_dvc_lock
from models.objectives import OBJECTIVES
from config.params import ConfigError
from tasks.reports.default_run import build_report
from tasks.versioning import DEFAULT_STAGES, record_pipeline_outputs, snapshot_data

SECTIONS = ("seed", "backbone", "train", "evaluate")


def strategy_model(ctx: RunContext, strategy: str) -> ExitModel:
    """The default run's multi-exit model for ``strategy`` (``train``, ``evaluate``)."""
    dirs = TrainedDirs(ctx.layout.train(strategy), ctx.layout.evaluate(strategy))
    return ExitModel(ctx.params.train, strategy, dirs, ctx.params.evaluate)


def train_and_evaluate(ctx: RunContext, strategy: str, register: bool = True) -> dict:
    """One strategy inside its nested MLflow run: train (cached), evaluate (cached), log."""
    train = ctx.params.train
    mlflow.log_params({"method": "berxit", "strategy": strategy, "task": train.task, "head": train.head,
                       "exit_scorer": train.exit_scorer})
    done = train_then_evaluate(ctx, strategy_model(ctx, strategy), active_logger())
    log_exit_run(ctx.params, strategy, {"checkpoint": str(done.checkpoint)}, done.evaluated, register)
    return done.evaluated


def strategy_cell(ctx: RunContext, strategy: str) -> dict:
    """A comparison cell: ``strategy``'s model with every ``evaluate.criteria`` exit rule."""
    model = strategy_model(ctx, strategy)
    return exit_model_cell(ctx, ExitModel(model.train, strategy, model.dirs, compare_evaluate(ctx)))


def report_inputs(ctx: RunContext) -> dict:
    """Evaluation folders in the comparison report: every strategy, then ConsistentEE and the
    default run's Past-Future model when evaluated."""
    params, layout = ctx.params, ctx.layout
    dirs = {s: layout.evaluate(s) for s in params.train.strategies}
    cee = layout.consistentee("default").evaluate
    if (cee / "metrics.json").exists():
        dirs["consistentee"] = cee
    past_future = layout.past_future_default.evaluate
    if params.past_future.in_default_run is not None and (past_future / "metrics.json").exists():
        dirs[f"past-future ({params.past_future.in_default_run})"] = past_future
    return dirs


def report(ctx: RunContext) -> dict:
    """The comparison table and plot across everything the default run evaluated."""
    return build_report(report_inputs(ctx), ctx.params.evaluate.timing_batch_sizes, ctx.layout.report,
                        ctx.layout.hashee("default").evaluate)


@flow(name="exitflow_pipeline", log_prints=True)
def exitflow_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None, profile: str | None = None) -> dict:
    """Default pipeline: prepare -> train + evaluate each strategy -> HashEE -> ConsistentEE -> report -> DVC record."""
    ctx = start_flow(params_path, overrides, profile=profile)
    params = ctx.params
    with ctx.parent_run(f"pipeline-{params.train.task}", SECTIONS, method="pipeline") as run:
        snapshot_data(params.root, ctx.layout.data)
        for strategy in params.train.strategies:
            with mlflow.start_run(run_name=strategy, nested=True):
                train_and_evaluate(ctx, strategy)
        with mlflow.start_run(run_name=f"hashee-{params.hashee.name}", nested=True):
            run_hashee(ctx, params.hashee, "default")
        with mlflow.start_run(run_name=f"consistentee-{params.consistentee.name}", nested=True):
            run_consistentee(ctx, "default", strategy_baselines(ctx))
        if params.past_future.in_default_run is not None:
            with mlflow.start_run(run_name=f"past-future-{params.past_future.in_default_run}", nested=True):
                run_default_past_future(ctx)
        out = report(ctx)
        for key in ("plot", "layerwise_plot"):
            mlflow.log_artifact(out[key], "report")
        mlflow.log_text(out["table"], "report/results.md")
    if not overrides and profile is None:  # dvc.lock must describe params.yaml as written
        record_pipeline_outputs(params.root, [s for s in DEFAULT_STAGES
                                              if s != "past_future_default" or params.past_future.in_default_run])
        record_dvc_lock(params.root, run.info.run_id)
    print(out["table"])
    return out


STAGES = ("prepare", "train", "evaluate", "report", "past_future_default")


@flow(name="exitflow_stage")
def exitflow_stage(stage: str, params_path: str = "params.yaml", strategy: str | None = None,
                   overrides: list[str] | None = None) -> dict:
    """One pipeline stage (``prepare``, ``train``, ``evaluate``, ``report``, ``past_future_default``),
    as DVC stages run them."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    if stage in ("prepare", "report"):  # no MLflow run
        ctx = load_context(params_path, overrides)
        return prepare_task_data(ctx.params) if stage == "prepare" else report(ctx)
    ctx = start_flow(params_path, overrides, prepare=False)
    with ctx.parent_run(f"{stage}-{strategy}", SECTIONS, method="berxit",
                          identity={"strategy": strategy} if strategy else None):
        if stage == "past_future_default":
            return run_default_past_future(ctx)
        if stage == "train":
            return train_exit_model(ctx, ctx.params.train, strategy, ctx.layout.train(strategy), active_logger())
        done = train_then_evaluate(ctx, strategy_model(ctx, strategy), active_logger())
        log_exit_run(ctx.params, strategy, {"checkpoint": str(done.checkpoint)}, done.evaluated, True)
        return done.evaluated


def train_command(params_path: str, overrides: list[str], strategy: str) -> str:
    """``exitflow train --strategy``: one strategy's model (resumes if interrupted)."""
    if strategy not in OBJECTIVES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(OBJECTIVES)}")
    result = exitflow_stage("train", params_path, strategy, overrides=overrides)
    return f"checkpoint: {result['checkpoint']} (dev layer scores {[round(s, 2) for s in result['dev_layer_scores']]})"


def evaluate_command(params_path: str, overrides: list[str], strategy: str) -> str:
    """``exitflow evaluate --strategy``: every criterion on one trained strategy's model."""
    result = exitflow_stage("evaluate", params_path, strategy, overrides=overrides)
    return f"metrics: {result['metrics']}\nplot: {result['plot']}"


def strategy_variants(params) -> list[str]:
    """The comparison's BERxiT variants: every objective but ``single`` (the static line and HashEE's reference)."""
    return [s for s in OBJECTIVES if s != "single"]
