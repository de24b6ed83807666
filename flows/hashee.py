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

from flows.context import RunContext, start_flow
from flows.steps import train_exit_model
from flows.tracking import active_logger, describe
from tasks.caching import run_cached
from tasks.compare import single_point_summary
from config.params import HasheeConfig
from tasks.hashee import evaluate_hashee
from tasks.hash_table import build_hash_table
from tasks.io import read_metrics
from tasks.reports.hashee import hashee_study_report
from tasks.metric_logger import MetricLogger
from tasks.metric_schema import single_point_readings

FULL_MODEL = "single"
SECTIONS = ("seed", "backbone", "train", "hashee")


def hashee_steps(ctx: RunContext, cfg: HasheeConfig, tag: str, logger: MetricLogger | None = None) -> dict:
    """Table -> HashEE training -> evaluation vs the full model, all cached; returns
    ``{"table": build_hash_table result, "evaluated": evaluate_hashee result, "checkpoint"}``.

    Artifacts go to ``Layout.hashee(tag)``; the full model to ``Layout.reference``, shared by every tag.
    """
    params, layout, inputs = ctx.params, ctx.layout, ctx.inputs
    dirs = layout.hashee(tag)
    table = run_cached(build_hash_table, out_dir=dirs.table, hashee=cfg, train=params.train, backbone=params.backbone,
                       data_dir=inputs.data_dir, cache_dir=inputs.cache_dir, seed=inputs.seed)
    single = params.train.model_copy(update={"exit_scorer": None})  # the reference: a single-exit full model
    # in the comparison, the same model as static-L: trained once, by whichever cell asks first
    reference = train_exit_model(ctx, single, FULL_MODEL, layout.reference, share=tag == "compare")
    hashee_train = single.model_copy(update={"pooling": cfg.pooling})  # HashEE's own pooling ([CLS] by default)
    train_exit_model(ctx, hashee_train, FULL_MODEL, dirs.train, logger, num_layers=cfg.num_layers,
                     hash_table_dir=dirs.table)
    evaluated = run_cached(evaluate_hashee, out_dir=dirs.evaluate, hashee=cfg, evaluate=params.evaluate, train=single,
                           backbone=params.backbone, ckpt_dir=dirs.train / "checkpoint",
                           full_ckpt_dir=Path(reference["checkpoint"]), table_dir=dirs.table,
                           data_dir=inputs.data_dir, cache_dir=inputs.cache_dir, seed=inputs.seed)
    return {"table": table, "evaluated": evaluated, "checkpoint": dirs.train / "checkpoint"}


def run_hashee(ctx: RunContext, cfg: HasheeConfig, tag: str) -> dict:
    """``hashee_steps`` logged to the active MLflow run; returns the evaluation's metrics."""
    mlflow.log_params({"hash_kind": cfg.kind, "buckets": cfg.buckets, "hash_layers": cfg.num_layers or "all",
                       "hash_pooling": cfg.pooling})
    steps = hashee_steps(ctx, cfg, tag, active_logger())
    table = steps["table"]
    mlflow.log_artifact(table["plot"], "hash_table")
    mlflow.log_artifact(table["table"], "hash_table")
    mlflow.log_artifact(str(ctx.layout.hashee(tag).table / "token_share.csv"), "hash_table")
    mlflow.log_metrics({f"token_share_layer_{k}": s for k, s in enumerate(table["info"]["occurrence_share_per_layer"], 1)})
    summary = read_metrics(Path(steps["evaluated"]["metrics"]).parent)  # metrics.json + timing.json's wall-clock numbers
    mlflow.log_params({"method": "hashee", "strategy": FULL_MODEL, "criterion": "hash", "task": ctx.params.train.task,
                       "seed": ctx.params.seed})
    reference = {"reference_dev_quality": summary["full_dev_quality"], "reference_test_quality": summary["full_test_quality"]}
    mlflow.log_metrics({**{k: v for k, v in summary.items() if isinstance(v, float) and not k.startswith("full_")},
                        **reference, **single_point_readings(summary["test_quality"], summary["layer_speedup"])})
    describe(f"HashEE `{cfg.name}`: tokens exit at the layer the {cfg.kind} hash table gives them (one operating point, "
             "no threshold). `test_quality`, `layer_speedup`, `flops_speedup` against the single-exit fine-tuned "
             "reference (`reference_test_quality`); `test_quality_at_<t>x` = its quality up to its speed-up, absent beyond.")
    return summary


def hashee_cell(ctx: RunContext, variant: str) -> dict:
    """HashEE with ``hashee`` (default: frequency hash, B buckets): one operating point, timed at
    ``compare.timing_batch_size`` against the single-exit full model."""
    batch_size = ctx.params.compare.timing_batch_size
    cfg = ctx.params.hashee.model_copy(update={"timing_batch_sizes": [batch_size]})
    steps = hashee_steps(ctx, cfg, "compare")
    evaluated = steps["evaluated"]
    metrics = {**evaluated["summary"], "metric": ctx.task_spec["metric"]}
    timing = json.loads(Path(evaluated["timing"]).read_text())
    return single_point_summary("hash", metrics, timing, steps["checkpoint"], batch_size, evaluated.get("test_rows"))


@flow(name="hashee_pipeline", log_prints=True)
def hashee_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """HashEE with the configured hash (default: frequency, B = 6)."""
    ctx = start_flow(params_path, overrides, "exitflow-hashee")
    with ctx.parent_run(f"hashee-{ctx.params.hashee.name}", SECTIONS, method="hashee"):
        summary = run_hashee(ctx, ctx.params.hashee, "default")
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})
    return summary


def study_configs(cfg: HasheeConfig) -> list[HasheeConfig]:
    """Every hash function of ``study_kinds`` (Table 3), then the frequency hash over the
    (layers, buckets) grid ``study_grid`` (Table 9), de-duplicated by name, in order."""
    configs = [cfg.model_copy(update={"kind": k}) for k in cfg.study_kinds]
    configs += [cfg.model_copy(update={"kind": "frequency", "num_layers": L, "buckets": B}) for L, B in cfg.study_grid]
    return list({c.name: c for c in configs}.values())


@flow(name="hashee_study", log_prints=True)
def hashee_study(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Every hash function (Table 3) and a (layers, buckets) grid with the frequency hash (Table 9)."""
    ctx = start_flow(params_path, overrides, "exitflow-hashee-study")
    with ctx.parent_run(f"hashee-study-{ctx.params.train.task}", SECTIONS, method="hashee"):
        rows = {}
        for cfg in study_configs(ctx.params.hashee):
            with mlflow.start_run(run_name=cfg.name, nested=True):
                rows[cfg.name] = run_hashee(ctx, cfg, f"study/{cfg.name}")
        report = hashee_study_report(rows, ctx.layout.hashee_study)
        mlflow.log_artifact(report["plot"], "study")
        mlflow.log_text(report["table"], "study/results.md")
    print(report["table"])
    return report
