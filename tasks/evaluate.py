"""Task: evaluate a trained multi-exit model.

- offline simulation from one recorded full pass: every criterion's threshold sweep
  (trade-off curves on dev and test), layer-wise scores;
- operating points: per criterion, the threshold with the largest layer speed-up whose *dev*
  quality stays within ``quality_tolerance`` points of the full model's dev quality; its test
  numbers are reported (test never chooses anything);
- efficiency: average exit layer, saved layers, layer speed-up L/avg, analytic FLOPs speed-up
  (un-padded lengths, heads and LTE included), wall-clock throughput of real early exit with
  batch compaction vs the full model at each timing batch size;
- a check that real early exit reproduces the simulated exit layers and predictions.

Outputs in ``out_dir``: ``metrics.json`` (DVC metrics), ``curves.json``, ``tradeoff.csv``
(DVC plots), ``tradeoff.png``, ``layerwise.png``, ``result.json``, ``test_rows.npz`` (per-row test
predictions at every swept setting, ``tasks.row_predictions``), and ``timing.json``: the
wall-clock numbers (``full.throughput_bs<b>``; per operating point ``throughput_bs<b>`` and
``wallclock_speedup_bs<b>``), the only output that changes from one machine or run to the next
(``tasks.io.read_metrics`` merges it back into the summary).
"""

from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path

from prefect import task

from models.criteria import make_criterion, simulate
from models.metrics import chance_check, layerwise_scores, predictions, task_score
from models.operating import (
    fixed_points,
    operating_points,
    real_vs_simulated,
    usable_criteria,
)
from models.timing import exit_runner, throughput_by_batch_size
from models.training import Recording, record_exits
from tasks.backbones import load_checkpoint, pick_device
from tasks.caching import ARTIFACT_CACHE
from config.params import BackboneConfig, EvaluateConfig, TrainConfig
from tasks.failpoints import failpoint
from tasks.features import batches, encode_split
from tasks.io import TIMING_FILE, atomic_write_json, atomic_write_text, write_result
from tasks.plots import layerwise_plot, tradeoff_plot
from tasks.row_predictions import LAYER, row_key, write_test_rows
from tasks.metric_logger import MetricLogger, NullLogger
from tasks.train import warn_if_at_chance


def criterion_options(name: str, evaluate: EvaluateConfig) -> dict:
    """The settings a criterion takes besides its swept threshold."""
    return {"patience": {"delta": evaluate.patience_delta}, "cobee": {"patience": evaluate.cobee_patience}}.get(name, {})


def record_splits(model, tokenizer, evaluate: EvaluateConfig, backbone: BackboneConfig, train: TrainConfig, task_name: str,
                  data_dir: Path, cache_dir: Path | None, seed: int, device) -> dict[str, tuple[dict, Recording]]:
    """``{split: (encoded rows, recording on CPU)}`` for dev and test (``train``'s subsamples)."""
    pad = tokenizer.pad_token_id or 0
    splits = {}
    for split, sub in (("dev", train.subsample.dev), ("test", train.subsample.test)):
        enc = encode_split(data_dir, task_name, split, tokenizer, backbone.max_length, cache_dir, sub, seed)
        splits[split] = (enc, record_exits(model, batches(enc, evaluate.batch_size, pad, device=device)).cpu())
    return splits


def check_real_exits(model, criteria: dict, enc: dict[str, list], rec: Recording, pad: int, operating: dict) -> dict[str, int]:
    """Real early exit on the timed rows ``enc`` against the simulation on their recording ``rec``:
    mismatching rows per criterion; adds each operating point's ``timed_layer_speedup``."""
    mismatches = {}
    for name, crit in criteria.items():
        mismatches[name], sim_layer = real_vs_simulated(model, crit, batches(enc, 32, pad), rec, model.config.regression)
        # the timed rows' own layer speed-up: wall-clock / this compares like with like
        operating[name]["timed_layer_speedup"] = model.num_layers / sim_layer.double().mean().item()
    return mismatches


def sweep_test_rows(curves: dict[str, list[dict]], rec: Recording, regression: bool, options) -> dict:
    """Per-row test predictions at every swept setting (``row_key(criterion, index)``), at every exit
    (``layer:<k>``, k = 1..L: the layer-wise scores) and at full depth (``full``)."""
    out = {"full": predictions(rec.logits[-1], regression),
           **{f"{LAYER}:{k}": predictions(rec.logits[k - 1], regression) for k in range(1, rec.logits.shape[0] + 1)}}
    for name, points in curves.items():
        for i, p in enumerate(points):
            _, exit_logits = simulate(make_criterion(name, p["test"]["threshold"], **options(name)), rec.logits, rec.scores)
            out[row_key(name, i)] = predictions(exit_logits, regression)
    return out


def timed_batches(enc: dict[str, list], batch_size: int, pad: int) -> list[dict]:
    return list(batches(enc, batch_size, pad))


def tradeoff_csv(curves: dict[str, list[dict]]) -> str:
    """``tradeoff.csv``: every criterion's test curve, one row per threshold."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["criterion", "threshold", "quality", "layer_speedup", "flops_speedup", "avg_exit_layer"])
    for name, points in curves.items():
        for p in points:
            t = p["test"]
            w.writerow([name, t["threshold"], round(t["quality"], 4), round(t["layer_speedup"], 4),
                        round(t["flops_speedup"], 4), round(t["avg_exit_layer"], 4)])
    return buf.getvalue()


def write_evaluation(out_dir: Path, curves: dict, summary: dict, timing: dict) -> None:
    """``curves.json``, ``metrics.json``, ``timing.json``, ``tradeoff.csv`` and the two plots."""
    title = f"{summary['task']} ({summary['strategy']})"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "curves.json", curves)
    atomic_write_json(out_dir / "metrics.json", summary)
    failpoint("evaluate.write")
    atomic_write_json(out_dir / TIMING_FILE, timing)
    atomic_write_text(out_dir / "tradeoff.csv", tradeoff_csv(curves))
    tradeoff_plot({n: [p["test"] for p in pts] for n, pts in curves.items()}, summary["full"]["test_quality"],
                  f"{title}: test quality vs FLOPs speed-up", out_dir / "tradeoff.png")
    layerwise_plot({"dev": summary["layerwise"]["dev"], "test": summary["layerwise"]["test"]}, f"{title}: layer-wise scores",
                   out_dir / "layerwise.png")


def flat_metrics(full: dict[str, float], operating: dict, timing: dict) -> dict[str, float]:
    """The scalars logged per evaluation: full-model quality, each operating point's test numbers and speed-ups."""
    flat = {"full_depth_test_quality": full["test"], "full_depth_dev_quality": full["dev"]}
    for name, op in operating.items():
        flat.update({f"{name}_test_quality": op["test"]["quality"], f"{name}_layer_speedup": op["test"]["layer_speedup"],
                     f"{name}_flops_speedup": op["test"]["flops_speedup"]})
        flat.update({f"{name}_{k}": v for k, v in timing["operating_points"][name].items() if k.startswith("wallclock")})
    return flat


@task(name="evaluate_exits", cache_policy=ARTIFACT_CACHE, persist_result=True)
def evaluate_exits(
    evaluate: EvaluateConfig,
    backbone: BackboneConfig,
    train: TrainConfig,
    ckpt_dir: Path,
    data_dir: Path,
    out_dir: Path,
    cache_dir: Path | None = None,
    seed: int = 42,
    device: str = "auto",
    logger: MetricLogger | None = None,
    fixed_thresholds: dict[str, float] | None = None,
) -> dict:
    """Evaluate every configured criterion on the checkpoint; returns the summary metrics.

    ``fixed_thresholds`` (e.g. ``{"policy": 0.5}``) adds those settings' dev and test points to
    the summary under ``fixed_points`` (a method's default, next to the dev-selected one).
    """
    logger = logger or NullLogger()
    out_dir = Path(out_dir)
    torch_device = pick_device(device)
    model, tokenizer, meta = load_checkpoint(ckpt_dir, backbone.attn_implementation)
    model.to(torch_device)
    metric, regression, task_name = meta["metric"], model.config.regression, meta["task"]
    pad = tokenizer.pad_token_id or 0
    splits = record_splits(model, tokenizer, evaluate, backbone, train, task_name, data_dir, cache_dir, seed, torch_device)
    model.cpu()
    recordings = {s: rec for s, (_, rec) in splits.items()}
    full = {s: task_score(metric, rec.logits[-1], rec.labels, regression) for s, rec in recordings.items()}
    layerwise = {s: layerwise_scores(metric, rec.logits, rec.labels, regression) for s, rec in recordings.items()}

    names = usable_criteria(evaluate.criteria, model)
    options = partial(criterion_options, evaluate=evaluate)
    curves, operating = operating_points(model, names, recordings, metric, regression, evaluate.sweep_points, options,
                                         full["dev"] - evaluate.quality_tolerance)
    fixed = fixed_points(model, {name: make_criterion(name, tau, **options(name)) for name, tau in (fixed_thresholds or {}).items()
                                 if name in names}, recordings, metric, regression)

    # real early exit at the operating points: identical to the simulation, and timed
    n_time = min(evaluate.timing_rows, len(splits["test"][0]["labels"]))
    sub_enc = {k: v[:n_time] for k, v in splits["test"][0].items()}
    criteria = {n: make_criterion(n, operating[n]["threshold"], **options(n)) for n in names}
    mismatches = check_real_exits(model, criteria, sub_enc, recordings["test"].head(n_time), pad, operating)
    # wall-clock numbers differ between machines and runs: timing.json, never metrics.json
    timing = throughput_by_batch_size(partial(timed_batches, sub_enc, pad=pad),
                                      {n: exit_runner(model, c) for n, c in {"full": None, **criteria}.items()},
                                      evaluate.timing_batch_sizes, evaluate.timing_repeats)
    summary = {
        "task": task_name, "strategy": meta["strategy"], "metric": metric, "num_layers": model.num_layers,
        "full": {"dev_quality": full["dev"], "test_quality": full["test"]},
        "operating_points": operating, "fixed_points": fixed, "layerwise": layerwise, "real_vs_simulated_mismatches": mismatches,
        "timing_rows": n_time,
        "dev_chance_check": chance_check(metric, recordings["dev"].logits[-1], recordings["dev"].labels, regression),
    }
    warn_if_at_chance(summary["dev_chance_check"], f"{task_name} ({meta['strategy']})", train)
    write_evaluation(out_dir, curves, summary, timing)
    rows = write_test_rows(out_dir, recordings["test"].labels.numpy(), sweep_test_rows(curves, recordings["test"], regression, options),
                           regression)
    logger.log_metrics(flat_metrics(full, operating, timing))
    return write_result(out_dir, {"metrics": out_dir / "metrics.json", "curves": out_dir / "curves.json", "test_rows": rows,
                                  "timing": out_dir / TIMING_FILE, "plot": out_dir / "tradeoff.png",
                                  "layerwise_plot": out_dir / "layerwise.png", "summary": summary})
