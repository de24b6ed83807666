"""The default pipeline and the per-stage flows that ``dvc.yaml`` runs.

``exitflow_pipeline`` reads like the algorithm: prepare data -> for each strategy (train
multi-exit model, evaluate every criterion) -> HashEE -> ConsistentEE -> comparison report ->
record outputs in DVC.
Each step is a cached Prefect task; MLflow gets one parent run with a nested run per strategy
and per criterion. Artifact paths (also the ``dvc.yaml`` outs): ``flows/layout.py``.
"""

from __future__ import annotations


import mlflow
from prefect import flow

from flows.consistentee import run_consistentee, spine_baselines
from flows.hashee import run_hashee
from flows.layout import Layout, TrainedDirs, common, prepare_task_data
from flows.methods import exits_cell, register_method
from flows.past_future import run_default_past_future
from flows.tracking import log_strategy, parent_run, use_experiment
from tasks.caching import run_cached
from tasks.config import Params, load_params
from tasks.evaluate import evaluate_exits
from tasks.reports.spine import build_report
from tasks.tracking import MlflowLogger
from tasks.train import train_multi_exit
from models.objectives import OBJECTIVES
from tasks.versioning import DEFAULT_STAGES, record_pipeline_outputs, snapshot_data


def train_and_evaluate(params: Params, strategy: str, register: bool = True) -> dict:
    """One strategy: train (cached), evaluate (cached), log to the active nested MLflow run."""
    layout = Layout.from_params(params)
    logger = MlflowLogger(mlflow.active_run().info.run_id)
    mlflow.log_params({"strategy": strategy, "task": params.train.task, "head": params.train.head, "exit_scorer": params.train.exit_scorer})
    run_cached(train_multi_exit, out_dir=layout.train(strategy), train=params.train, backbone=params.backbone,
               strategy=strategy, logger=logger, **common(params))
    return evaluate_and_log(params, strategy, register)


def evaluate_and_log(params: Params, strategy: str, register: bool = True) -> dict:
    """Evaluate the strategy's checkpoint (cached) and log it to the active MLflow run."""
    layout = Layout.from_params(params)
    checkpoint = layout.train(strategy) / "checkpoint"
    evaluated = run_cached(evaluate_exits, out_dir=layout.evaluate(strategy), evaluate=params.evaluate,
                           backbone=params.backbone, train=params.train, ckpt_dir=checkpoint,
                           logger=MlflowLogger(mlflow.active_run().info.run_id), **common(params))
    log_strategy(params, strategy, {"checkpoint": str(checkpoint)}, evaluated, register)
    return evaluated


def _register_strategy(strategy: str) -> None:
    @register_method(strategy)
    def strategy_cell(params: Params) -> dict:
        """BERxiT multi-exit training with ``strategy``, every ``evaluate.criteria`` exit rule (LTE with train.exit_scorer)."""
        layout = Layout.from_params(params)
        return exits_cell(params, TrainedDirs(layout.train(strategy), layout.evaluate(strategy)), params.train, strategy)


for _strategy in OBJECTIVES:
    if _strategy != "single":  # single trains one exit: the static baselines and HashEE's reference
        _register_strategy(_strategy)


def report_inputs(params: Params) -> dict:
    """Evaluation folders in the comparison report: every strategy, then ConsistentEE and the
    default run's Past-Future model when evaluated."""
    layout = Layout.from_params(params)
    dirs = {s: layout.evaluate(s) for s in params.train.strategies}
    cee = layout.consistentee("default").evaluate
    if (cee / "metrics.json").exists():
        dirs["consistentee"] = cee
    past_future = layout.past_future_default.evaluate
    if params.past_future.in_default_run is not None and (past_future / "metrics.json").exists():
        dirs[f"past-future ({params.past_future.in_default_run})"] = past_future
    return dirs


@flow(name="exitflow_pipeline", log_prints=True)
def exitflow_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None, profile: str | None = None) -> dict:
    """Default pipeline: prepare -> train + evaluate each strategy -> HashEE -> ConsistentEE -> report -> DVC record."""
    params = load_params(params_path, overrides or [], profile)
    layout = Layout.from_params(params)
    use_experiment(params, params.mlflow.experiment)
    with parent_run(params, f"pipeline-{params.train.task}", ("seed", "backbone", "train", "evaluate")):
        prepare_task_data(params)
        snapshot_data(params.root, layout.data)
        evaluations = {}
        for strategy in params.train.strategies:
            with mlflow.start_run(run_name=strategy, nested=True):
                evaluations[strategy] = train_and_evaluate(params, strategy)
        with mlflow.start_run(run_name=f"hashee-{params.hashee.name}", nested=True):
            run_hashee(params, params.hashee, "default")
        with mlflow.start_run(run_name=f"consistentee-{params.consistentee.name}", nested=True):
            run_consistentee(params, "default", spine_baselines(params))
        if params.past_future.in_default_run is not None:
            with mlflow.start_run(run_name=f"past-future-{params.past_future.in_default_run}", nested=True):
                run_default_past_future(params)
        report = build_report(report_inputs(params), params.evaluate.timing_batch_sizes, layout.report,
                              layout.hashee("default").evaluate)
        mlflow.log_artifact(report["plot"], "report")
        mlflow.log_artifact(report["layerwise_plot"], "report")
        mlflow.log_text(report["table"], "report/results.md")
    if not overrides and profile is None:  # dvc.lock must describe params.yaml as written
        record_pipeline_outputs(params.root, [s for s in DEFAULT_STAGES
                                              if s != "past_future_default" or params.past_future.in_default_run])
    print(report["table"])
    return report


@flow(name="exitflow_stage")
def exitflow_stage(stage: str, params_path: str = "params.yaml", strategy: str | None = None,
                   overrides: list[str] | None = None) -> dict:
    """One pipeline stage (``prepare``, ``train``, ``evaluate``, ``report``, ``past_future_default``),
    as DVC stages run them."""
    params = load_params(params_path, overrides or [])
    layout = Layout.from_params(params)
    if stage == "prepare":
        return prepare_task_data(params)
    if stage == "report":
        return build_report(report_inputs(params), params.evaluate.timing_batch_sizes, layout.report,
                            layout.hashee("default").evaluate)
    use_experiment(params, params.mlflow.experiment)
    with parent_run(params, f"{stage}-{strategy}", ("seed", "backbone", "train", "evaluate")):
        if stage == "past_future_default":
            return run_default_past_future(params)
        if stage == "train":
            return run_cached(train_multi_exit, out_dir=layout.train(strategy), train=params.train, backbone=params.backbone,
                              strategy=strategy, logger=MlflowLogger(mlflow.active_run().info.run_id), **common(params))
        return evaluate_and_log(params, strategy)
