"""Global Past-Future flow: every past strategy without and with the imitated future, next to
local exits trained with the same budget, compared at fixed layer speed-ups (paper Tables 1-3).

``run_past_future`` reads like the experiment: for each setting (``max``, ``max-future``, ...,
``vote``, ``ensemble``, then ``local-joint``, ``local-weighted``): train (cached) -> evaluate
(cached, offline sweep + real-exit check) -> a nested MLflow run with the curve, plots and
model; then one comparison table, plot and claim check per task. Every model uses
``train``'s budget (epochs, subsample, lr, batch size) and seed; the Past-Future models use
``past_future.objective`` (weighted, as the paper), ``pooling``, ``gate`` and ``freeze_layers``;
the local baselines use ``train``'s objectives with per-layer pooler heads on the same pooled
state and no exit scorer (``local_train_config``).
Wall-clock numbers come from ``benchmarks/bench_past_future.py``, not from this flow.
"""

from __future__ import annotations

import mlflow
from prefect import flow

from flows.context import RunContext, start_flow
from flows.layout import TrainedDirs
from flows.steps import ExitModel, compare_evaluate, exit_model_cell, train_then_evaluate
from flows.tracking import active_logger, log_exit_run
from config.params import TrainConfig, setting_name
from tasks.past_future import LOCAL_PREFIX
from tasks.reports.past_future import compare_past_future
from tasks.versioning import record_pipeline_outputs

SECTIONS = ("seed", "backbone", "train", "evaluate", "past_future")
MIN_SWEEP_POINTS = 50  # fine enough to land near 2x and 3x


def past_future_train_config(ctx: RunContext, past: str, future: bool) -> TrainConfig:
    """``train``'s budget with the Past-Future exit stack (no exit scorer: exits decide by entropy)."""
    cfg = ctx.params.past_future
    return ctx.params.train.model_copy(update={"head": "past_future", "head_options": cfg.exits(past, future),
                                               "pooling": cfg.pooling, "exit_scorer": None,
                                               "freeze_layers": cfg.freeze_layers})


def local_train_config(ctx: RunContext) -> TrainConfig:
    """The local-exit baselines: ``train``'s budget and objective, with the same per-layer state
    as Past-Future (a pooler head on ``past_future.pooling``) and no exit scorer, so a row
    differs from a Past-Future row only in reading one layer instead of all (and no future)."""
    return ctx.params.train.model_copy(update={"head": "pooler", "pooling": ctx.params.past_future.pooling,
                                               "exit_scorer": None})


def past_future_criteria(ctx: RunContext) -> list[str]:
    """Entropy exits (paper Eq. 14); patience for regression, where entropy does not apply."""
    return ["patience"] if ctx.is_regression else ["entropy"]


def study_model(ctx: RunContext, train: TrainConfig, objective: str, criteria: list[str], dirs: TrainedDirs,
                timed: bool = False) -> ExitModel:
    """A model of the study, evaluated on a fine sweep (wall-clock only when ``timed``)."""
    evaluate = ctx.params.evaluate.model_copy(update={
        "criteria": criteria, "sweep_points": max(ctx.params.evaluate.sweep_points, MIN_SWEEP_POINTS),
        **({} if timed else {"timing_batch_sizes": []})})
    return ExitModel(train, objective, dirs, evaluate)


def default_model(ctx: RunContext) -> ExitModel:
    """The Past-Future model of ``exitflow run`` and the comparison: ``past_future.in_default_run``
    (concat when unset) with the imitated future, in ``Layout.past_future_default``."""
    past = ctx.params.past_future.in_default_run or "concat"
    return study_model(ctx, past_future_train_config(ctx, past, True), ctx.params.past_future.objective,
                       past_future_criteria(ctx), ctx.layout.past_future_default, timed=True)


def train_evaluate_log(ctx: RunContext, setting: str, model: ExitModel) -> dict:
    """One setting inside its nested MLflow run: train, evaluate, log."""
    done = train_then_evaluate(ctx, model, active_logger())
    log_exit_run(ctx.params, f"past-future/{setting}", done.trained, done.evaluated, register=False,
                 method="past-future")
    return {"trained": done.trained, "evaluated": done.evaluated, "dirs": model.dirs}


def run_default_past_future(ctx: RunContext) -> dict | None:
    """What ``exitflow run`` adds: ``past_future.in_default_run`` with the imitated future on
    ``train.task``, timed like the strategy models, in its own folder (None when unset)."""
    past = ctx.params.past_future.in_default_run
    if past is None:
        return None
    mlflow.log_params({"past": past, "future": True, "gate": ctx.params.past_future.gate, "task": ctx.params.train.task})
    return train_evaluate_log(ctx, setting_name(past, True), default_model(ctx))


def past_future_cell(ctx: RunContext, variant: str) -> dict:
    """Global Past-Future as ``exitflow run`` adds it: ``past_future.in_default_run`` (concat
    when unset) with the imitated future, its objective, entropy exits (patience for regression)."""
    model = default_model(ctx)
    return exit_model_cell(ctx, ExitModel(model.train, model.objective, model.dirs,
                                          compare_evaluate(ctx, past_future_criteria(ctx))))


def study_models(ctx: RunContext) -> dict[str, tuple[dict, ExitModel]]:
    """``{setting: (MLflow params, model)}``: each ``(past, future)`` setting, then each local baseline."""
    cfg, task = ctx.params.past_future, ctx.params.train.task
    criteria = past_future_criteria(ctx)
    models = {}
    for past, future in cfg.settings():
        name = setting_name(past, future)
        logged = {"past": past, "future": future, "gate": cfg.gate, "freeze_layers": cfg.freeze_layers,
                  "pooling": cfg.pooling, "objective": cfg.objective, "task": task}
        models[name] = (logged, study_model(ctx, past_future_train_config(ctx, past, future), cfg.objective, criteria,
                                            ctx.layout.past_future(name)))
    for strategy in cfg.local:
        name = f"{LOCAL_PREFIX}{strategy}"
        models[name] = ({"strategy": strategy, "head": "pooler", "task": task},
                        study_model(ctx, local_train_config(ctx), strategy, ["entropy", "patience"],
                                    ctx.layout.past_future(name)))
    return models


def run_past_future(ctx: RunContext) -> dict:
    """Train and evaluate every setting of ``study_models``, then compare (inside the active MLflow run)."""
    eval_dirs = {}
    for name, (logged, model) in study_models(ctx).items():
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.log_params(logged)
            eval_dirs[name] = train_evaluate_log(ctx, name, model)["dirs"].evaluate
    report = compare_past_future(eval_dirs, ctx.params.past_future.speedups, ctx.layout.past_future_report,
                                 ctx.params.train.task, ctx.params.seed)
    mlflow.log_artifact(report["plot"], "past_future")
    mlflow.log_text(report["table"], "past_future/comparison.md")
    mlflow.log_artifact(report["comparison"], "past_future")
    if report["claim"] is not None:
        mlflow.log_metrics({"claim_margin": report["claim"]["margin"]})
        mlflow.set_tag("claim_holds", str(report["claim"]["holds"]).lower())
    return report


@flow(name="past_future", log_prints=True)
def past_future_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None,
                         tasks: list[str] | None = None) -> dict:
    """Global Past-Future on each of ``past_future.tasks`` (or ``tasks``): one parent MLflow run per task."""
    ctx = start_flow(params_path, overrides, "exitflow-past-future")
    tasks = tasks or ctx.params.past_future.tasks
    ctx.check_prepared(tasks, "past_future.tasks")
    reports = {}
    for task_name in tasks:
        task_ctx = ctx.for_task(task_name)
        with task_ctx.parent_run(f"past-future-{task_name}", SECTIONS, method="past-future"):
            reports[task_name] = run_past_future(task_ctx)
        if not overrides:  # dvc.lock describes params.yaml as written
            record_pipeline_outputs(ctx.params.root, [f"past_future@{task_name}"])
        print(reports[task_name]["table"])
    return reports


def past_future_command(params_path: str, overrides: list[str], task: list[str] | None = None,
                        default_run: bool = False) -> None:
    """``exitflow past-future``: the study on ``task`` (default ``past_future.tasks``), or only the
    default run's model (``default_run``)."""
    if default_run:
        from flows.pipeline import exitflow_stage

        exitflow_stage("past_future_default", params_path, overrides=overrides)
        return
    past_future_pipeline(params_path, overrides, task or None)
