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

from flows.layout import Layout, TrainedDirs, common, prepare_task_data
from flows.methods import exits_cell, register_method
from flows.tracking import log_strategy, parent_run, use_experiment
from tasks.caching import run_cached
from tasks.data import load_meta
from tasks.config import Params, TrainConfig, load_params, setting_name
from tasks.evaluate import evaluate_exits
from tasks.past_future import LOCAL_PREFIX
from tasks.reports.past_future import compare_past_future
from tasks.tracking import MlflowLogger
from tasks.train import train_multi_exit
from tasks.versioning import record_pipeline_outputs

SECTIONS = ("seed", "backbone", "train", "evaluate", "past_future")
MIN_SWEEP_POINTS = 50  # fine enough to land near 2x and 3x


def past_future_train_config(params: Params, past: str, future: bool) -> TrainConfig:
    """``train``'s budget with the Past-Future exit stack (no exit scorer: exits decide by entropy)."""
    cfg = params.past_future
    return params.train.model_copy(update={"head": "past_future", "head_options": cfg.exits(past, future),
                                           "pooling": cfg.pooling, "exit_scorer": None,
                                           "freeze_layers": cfg.freeze_layers})


def local_train_config(params: Params) -> TrainConfig:
    """The local-exit baselines: ``train``'s budget and objective, with the same per-layer state
    as Past-Future (a pooler head on ``past_future.pooling``) and no exit scorer, so a row
    differs from a Past-Future row only in reading one layer instead of all (and no future)."""
    return params.train.model_copy(update={"head": "pooler", "pooling": params.past_future.pooling, "exit_scorer": None})


def past_future_criteria(params: Params) -> list[str]:
    """Entropy exits (paper Eq. 14); patience for regression, where entropy does not apply."""
    spec = load_meta(Layout.from_params(params).data, params.train.task)["spec"]
    return ["patience"] if spec["label_type"] == "float" else ["entropy"]


def with_task(params: Params, task: str) -> Params:
    return params.model_copy(update={"train": params.train.model_copy(update={"task": task})})


def train_evaluate_log(params: Params, setting: str, train: TrainConfig, objective: str, criteria: list[str],
                       dirs: TrainedDirs | None = None, timed: bool = False) -> dict:
    """One setting inside its nested MLflow run: train, evaluate ``criteria`` (wall-clock only
    when ``timed``), log. ``dirs`` defaults to the study's folder for ``setting``."""
    dirs = dirs or Layout.from_params(params).past_future(setting)
    shared = common(params)
    logger = MlflowLogger(mlflow.active_run().info.run_id)
    trained = run_cached(train_multi_exit, out_dir=dirs.train, train=train, backbone=params.backbone, strategy=objective,
                         logger=logger, **shared)
    evaluate = params.evaluate.model_copy(update={"criteria": criteria,
                                                  "sweep_points": max(params.evaluate.sweep_points, MIN_SWEEP_POINTS),
                                                  **({} if timed else {"timing_batch_sizes": []})})
    evaluated = run_cached(evaluate_exits, out_dir=dirs.evaluate, evaluate=evaluate, backbone=params.backbone, train=train,
                           ckpt_dir=trained["checkpoint"], logger=logger, **shared)
    log_strategy(params, f"past-future/{setting}", trained, evaluated, register=False)
    return {"trained": trained, "evaluated": evaluated, "dirs": dirs}


def run_default_past_future(params: Params) -> dict | None:
    """What ``exitflow run`` adds: ``past_future.in_default_run`` with the imitated future on
    ``train.task``, timed like the spine's models, in its own folder (None when unset)."""
    past = params.past_future.in_default_run
    if past is None:
        return None
    name = setting_name(past, True)
    mlflow.log_params({"past": past, "future": True, "gate": params.past_future.gate, "task": params.train.task})
    return train_evaluate_log(params, name, past_future_train_config(params, past, True), params.past_future.objective,
                              past_future_criteria(params), dirs=Layout.from_params(params).past_future_default, timed=True)


@register_method("past-future")
def past_future_cell(params: Params) -> dict:
    """Global Past-Future as ``exitflow run`` adds it: ``past_future.in_default_run`` (concat
    when unset) with the imitated future, its objective, entropy exits (patience for regression)."""
    past = params.past_future.in_default_run or "concat"
    return exits_cell(params, Layout.from_params(params).past_future_default, past_future_train_config(params, past, True),
                      params.past_future.objective, past_future_criteria(params))


def run_past_future(params: Params, settings: list[tuple[str, bool]] | None = None,
                    local: list[str] | None = None) -> dict:
    """Train and evaluate each ``(past, future)`` setting and each local baseline, then compare
    (inside the active MLflow run). Defaults: ``past_future.settings()`` and ``past_future.local``."""
    cfg = params.past_future
    settings = cfg.settings() if settings is None else settings
    local = cfg.local if local is None else local
    criteria = past_future_criteria(params)
    eval_dirs = {}
    for past, future in settings:
        name = setting_name(past, future)
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.log_params({"past": past, "future": future, "gate": cfg.gate, "freeze_layers": cfg.freeze_layers,
                               "pooling": cfg.pooling, "objective": cfg.objective, "task": params.train.task})
            eval_dirs[name] = train_evaluate_log(params, name, past_future_train_config(params, past, future),
                                                 cfg.objective, criteria)["dirs"].evaluate
    for strategy in local:
        name = f"{LOCAL_PREFIX}{strategy}"
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.log_params({"strategy": strategy, "head": "pooler", "task": params.train.task})
            eval_dirs[name] = train_evaluate_log(params, name, local_train_config(params), strategy,
                                                 ["entropy", "patience"])["dirs"].evaluate
    layout = Layout.from_params(params)
    report = compare_past_future(eval_dirs, cfg.speedups, layout.past_future_report, params.train.task, params.seed)
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
    params = load_params(params_path, overrides or [])
    use_experiment(params, "exitflow-past-future")
    prepare_task_data(params)
    reports = {}
    for task_name in tasks or params.past_future.tasks:
        if task_name not in params.data.tasks and task_name not in params.data.custom:
            raise ValueError(f"past_future.tasks: {task_name!r} is not a prepared task; data.tasks has "
                             f"{', '.join(params.data.tasks)}")
        task_params = with_task(params, task_name)
        with parent_run(task_params, f"past-future-{task_name}", SECTIONS):
            reports[task_name] = run_past_future(task_params)
        if not overrides:  # dvc.lock describes params.yaml as written
            record_pipeline_outputs(params.root, [f"past_future@{task_name}"])
        print(reports[task_name]["table"])
    return reports
