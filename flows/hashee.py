"""HashEE flows: one hash function end to end, and the hash-function study (paper Tables 3 and 9).

``run_hashee`` reads like the method: build hash table -> fine-tune with token-level exits ->
evaluate against the full model (the single-exit fine-tuned backbone, shared by all runs).
Artifact layout: see ``flows/layout.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import flow

from flows.layout import Layout, common, prepare_task_data
from flows.methods import register_method
from flows.tracking import parent_run, use_experiment
from tasks.caching import run_cached
from tasks.compare import single_point_summary
from tasks.config import HasheeConfig, Params, load_params
from tasks.data import load_meta
from tasks.hashee import evaluate_hashee
from tasks.hashing import build_hash_table
from tasks.io import read_metrics
from tasks.reports.hashee import hashee_study_report
from tasks.tracking import MetricLogger, MlflowLogger
from tasks.train import train_multi_exit

FULL_MODEL = "single"


def hashee_steps(params: Params, cfg: HasheeConfig, tag: str, logger: MetricLogger | None = None) -> dict:
    """Table -> HashEE training -> evaluation vs the full model, all cached; returns
    ``{"table": build_hash_table result, "evaluated": evaluate_hashee result, "checkpoint"}``.

    Artifacts go to ``Layout.hashee(tag)``; the full model to ``Layout.reference``, shared by every tag.
    """
    layout, shared = Layout.from_params(params), common(params)
    dirs = layout.hashee(tag)
    table = run_cached(build_hash_table, out_dir=dirs.table, hashee=cfg, train=params.train, backbone=params.backbone,
                       data_dir=shared["data_dir"], cache_dir=shared["cache_dir"], seed=params.seed)
    single = params.train.model_copy(update={"exit_scorer": None})  # the reference: the spine's single-exit full model
    run_cached(train_multi_exit, out_dir=layout.reference, train=single, backbone=params.backbone, strategy=FULL_MODEL,
               **shared)
    hashee_train = single.model_copy(update={"pooling": cfg.pooling})  # HashEE's own pooling ([CLS] by default)
    run_cached(train_multi_exit, out_dir=dirs.train, train=hashee_train, backbone=params.backbone, strategy=FULL_MODEL,
               logger=logger, num_layers=cfg.num_layers, hash_table_dir=dirs.table, **shared)
    evaluated = run_cached(evaluate_hashee, out_dir=dirs.evaluate, hashee=cfg, evaluate=params.evaluate, train=single,
                           backbone=params.backbone, ckpt_dir=dirs.train / "checkpoint",
                           full_ckpt_dir=layout.reference / "checkpoint", table_dir=dirs.table,
                           data_dir=shared["data_dir"], cache_dir=shared["cache_dir"], seed=params.seed)
    return {"table": table, "evaluated": evaluated, "checkpoint": dirs.train / "checkpoint"}


def run_hashee(params: Params, cfg: HasheeConfig, tag: str) -> dict:
    """``hashee_steps`` logged to the active MLflow run; returns the evaluation's metrics."""
    mlflow.log_params({"hash_kind": cfg.kind, "buckets": cfg.buckets, "hash_layers": cfg.num_layers or "all",
                       "hash_pooling": cfg.pooling})
    steps = hashee_steps(params, cfg, tag, MlflowLogger(mlflow.active_run().info.run_id))
    table = steps["table"]
    mlflow.log_artifact(table["plot"], "hash_table")
    mlflow.log_artifact(table["table"], "hash_table")
    mlflow.log_artifact(str(Layout.from_params(params).hashee(tag).table / "token_share.csv"), "hash_table")
    mlflow.log_metrics({f"token_share_layer_{k}": s for k, s in enumerate(table["info"]["occurrence_share_per_layer"], 1)})
    summary = read_metrics(Path(steps["evaluated"]["metrics"]).parent)  # metrics.json + timing.json's wall-clock numbers
    mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})
    return summary


@register_method("hashee")
def hashee_cell(params: Params) -> dict:
    """HashEE with ``hashee`` (default: frequency hash, B buckets): one operating point, timed at
    ``compare.timing_batch_size`` against the single-exit full model."""
    cfg = params.hashee.model_copy(update={"timing_batch_sizes": [params.compare.timing_batch_size]})
    steps = hashee_steps(params, cfg, "compare")
    evaluated = steps["evaluated"]
    metrics = {**evaluated["summary"], "metric": load_meta(Layout.from_params(params).data, params.train.task)["spec"]["metric"]}
    timing = json.loads(Path(evaluated["timing"]).read_text())
    return single_point_summary("hash", metrics, timing, steps["checkpoint"], params.compare.timing_batch_size)


@flow(name="hashee_pipeline", log_prints=True)
def hashee_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """HashEE with the configured hash (default: frequency, B = 6)."""
    params = load_params(params_path, overrides or [])
    use_experiment(params, "exitflow-hashee")
    with parent_run(params, f"hashee-{params.hashee.name}", ("seed", "backbone", "train", "hashee")):
        prepare_task_data(params)
        summary = run_hashee(params, params.hashee, "default")
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})
    return summary


@flow(name="hashee_study", log_prints=True)
def hashee_study(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Every hash function (Table 3) and a (layers, buckets) grid with the frequency hash (Table 9)."""
    params = load_params(params_path, overrides or [])
    configs = [params.hashee.model_copy(update={"kind": k}) for k in params.hashee.study_kinds]
    configs += [params.hashee.model_copy(update={"kind": "frequency", "num_layers": L, "buckets": B})
                for L, B in params.hashee.study_grid]
    use_experiment(params, "exitflow-hashee-study")
    with parent_run(params, f"hashee-study-{params.train.task}", ("seed", "backbone", "train", "hashee")):
        prepare_task_data(params)
        rows = {}
        for cfg in {c.name: c for c in configs}.values():  # de-duplicated by name, in order
            with mlflow.start_run(run_name=cfg.name, nested=True):
                rows[cfg.name] = run_hashee(params, cfg, f"study/{cfg.name}")
        report = hashee_study_report(rows, Layout.from_params(params).hashee_study)
        mlflow.log_artifact(report["plot"], "study")
        mlflow.log_text(report["table"], "study/results.md")
    print(report["table"])
    return report
