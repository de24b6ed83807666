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
(DVC plots), ``tradeoff.png``, ``layerwise.png``, ``result.json``, and ``timing.json``: the
wall-clock numbers (``full.throughput_bs<b>``; per operating point ``throughput_bs<b>`` and
``wallclock_speedup_bs<b>``), the only output that changes from one machine or run to the next
(``tasks.io.read_metrics`` merges it back into the summary).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from prefect import task

from models.criteria import make_criterion, simulate
from models.metrics import chance_check, layerwise_scores, predictions, task_score
from models.operating import curve_point, fastest_within, sweep, usable_criteria
from models.timing import exit_runner, measure_throughput
from models.training import record_exits
from tasks.backbones import load_checkpoint, pick_device
from tasks.caching import ARTIFACT_CACHE
from tasks.config import BackboneConfig, EvaluateConfig, TrainConfig
from tasks.features import batches, encode_split
from tasks.io import TIMING_FILE, atomic_write_json, atomic_write_text, write_result
from tasks.plots import layerwise_plot, tradeoff_plot
from tasks.tracking import MetricLogger, NullLogger
from tasks.train import warn_if_at_chance


def criterion_options(name: str, evaluate: EvaluateConfig) -> dict:
    """The settings a criterion takes besides its swept threshold."""
    return {"patience": {"delta": evaluate.patience_delta}, "cobee": {"patience": evaluate.cobee_patience}}.get(name, {})


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
    dev_ = pick_device(device)
    model, tokenizer, meta = load_checkpoint(ckpt_dir, backbone.attn_implementation)
    model.to(dev_)
    metric, regression, task_name = meta["metric"], model.config.regression, meta["task"]
    pad = tokenizer.pad_token_id or 0
    splits = {}
    for split, sub in (("dev", train.subsample.dev), ("test", train.subsample.test)):
        enc = encode_split(data_dir, task_name, split, tokenizer, backbone.max_length, cache_dir, sub, seed)
        splits[split] = (enc, record_exits(model, batches(enc, evaluate.batch_size, pad, device=dev_)).cpu())
    model.cpu()
    L = model.num_layers
    full = {s: task_score(metric, rec.logits[-1], rec.labels, regression) for s, (_, rec) in splits.items()}
    layerwise = {s: layerwise_scores(metric, rec.logits, rec.labels, regression) for s, (_, rec) in splits.items()}

    names = usable_criteria(evaluate.criteria, model)
    recordings = {s: rec for s, (_, rec) in splits.items()}
    curves, operating = {}, {}
    for name in names:
        points = curves[name] = sweep(model, name, recordings, metric, regression, evaluate.sweep_points,
                                      criterion_options(name, evaluate))
        chosen = (fastest_within(points, full["dev"] - evaluate.quality_tolerance)
                  or max(points, key=lambda p: p["dev"]["quality"]))  # nothing within tolerance: the best on dev
        operating[name] = {"threshold": chosen["dev"]["threshold"], "dev": chosen["dev"], "test": chosen["test"]}

    fixed = {name: {"threshold": tau,
                    **{s: curve_point(model, make_criterion(name, tau, **criterion_options(name, evaluate)), splits[s][1],
                                      metric, regression) for s in ("dev", "test")}}
             for name, tau in (fixed_thresholds or {}).items() if name in names}

    # real early exit at the operating points: identical to the simulation, and timed
    test_enc, test_rec = splits["test"]
    n_time = min(evaluate.timing_rows, len(test_enc["labels"]))
    sub_enc = {k: v[:n_time] for k, v in test_enc.items()}
    mismatches = {}
    methods = {"full": None, **{n: make_criterion(n, operating[n]["threshold"], **criterion_options(n, evaluate)) for n in names}}
    for name, crit in methods.items():
        if crit is None:
            continue
        real_layers, real_preds = [], []
        for b in batches(sub_enc, 32, pad):
            out = model.early_exit(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), crit)
            real_layers.append(out.exit_layer)
            real_preds.append(out.logits)
        timed = test_rec.head(n_time)
        sim_layer, sim_logits = simulate(crit, timed.logits, timed.scores)
        same_layer = torch.cat(real_layers) == sim_layer
        same_pred = torch.as_tensor(predictions(torch.cat(real_preds), regression) == predictions(sim_logits, regression))
        mismatches[name] = int((~(same_layer & same_pred)).sum())
        # the timed rows' own layer speed-up: wall-clock / this compares like with like
        operating[name]["timed_layer_speedup"] = L / sim_layer.double().mean().item()
    # wall-clock numbers differ between machines and runs: timing.json, never metrics.json
    timing = {"full": {}, "operating_points": {name: {} for name in operating}}
    for bs in evaluate.timing_batch_sizes:
        bl = list(batches(sub_enc, bs, pad))
        tp = measure_throughput(bl, {n: exit_runner(model, c) for n, c in methods.items()}, repeats=evaluate.timing_repeats)
        timing["full"][f"throughput_bs{bs}"] = tp["full"]
        for name, v in tp.items():
            if name in operating:
                timing["operating_points"][name][f"wallclock_speedup_bs{bs}"] = v / tp["full"]
                timing["operating_points"][name][f"throughput_bs{bs}"] = v

    summary = {
        "task": task_name, "strategy": meta["strategy"], "metric": metric, "num_layers": L,
        "full": {"dev_quality": full["dev"], "test_quality": full["test"]},
        "operating_points": operating, "fixed_points": fixed, "layerwise": layerwise, "real_vs_simulated_mismatches": mismatches,
        "timing_rows": n_time,
        "dev_chance_check": chance_check(metric, splits["dev"][1].logits[-1], splits["dev"][1].labels, regression),
    }
    warn_if_at_chance(summary["dev_chance_check"], f"{task_name} ({meta['strategy']})", train)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "curves.json", curves)
    atomic_write_json(out_dir / "metrics.json", summary)
    atomic_write_json(out_dir / TIMING_FILE, timing)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["criterion", "threshold", "quality", "layer_speedup", "flops_speedup", "avg_exit_layer"])
    for name, points in curves.items():
        for p in points:
            t = p["test"]
            w.writerow([name, t["threshold"], round(t["quality"], 4), round(t["layer_speedup"], 4),
                        round(t["flops_speedup"], 4), round(t["avg_exit_layer"], 4)])
    atomic_write_text(out_dir / "tradeoff.csv", buf.getvalue())
    tradeoff_plot({n: [p["test"] for p in pts] for n, pts in curves.items()}, full["test"],
                  f"{task_name} ({meta['strategy']}): test quality vs FLOPs speed-up", out_dir / "tradeoff.png")
    layerwise_plot({"dev": layerwise["dev"], "test": layerwise["test"]}, f"{task_name} ({meta['strategy']}): layer-wise scores",
                   out_dir / "layerwise.png")
    flat = {"full_test_quality": full["test"], "full_dev_quality": full["dev"]}
    for name, op in operating.items():
        flat.update({f"{name}_test_quality": op["test"]["quality"], f"{name}_layer_speedup": op["test"]["layer_speedup"],
                     f"{name}_flops_speedup": op["test"]["flops_speedup"]})
        flat.update({f"{name}_{k}": v for k, v in timing["operating_points"][name].items() if k.startswith("wallclock")})
    logger.log_metrics(flat)
    return write_result(out_dir, {"metrics": out_dir / "metrics.json", "curves": out_dir / "curves.json",
                                  "timing": out_dir / TIMING_FILE, "plot": out_dir / "tradeoff.png",
                                  "layerwise_plot": out_dir / "layerwise.png", "summary": summary})
