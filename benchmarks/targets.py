"""Shared by the method benchmarks: time real early exit of several models at dev-chosen layer
speed-up targets against one full model, interleaved per repeat, in ``bench_early_exit``'s row format."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.criteria import make_criterion, simulate
from models.metrics import task_score
from models.operating import nearest_speedup, sweep
from models.timing import exit_runner, full_model_runner, measure_throughput
from models.training import record_exits
from tasks.features import batches


def add_timing_arguments(ap: argparse.ArgumentParser) -> None:
    """The options every target-speed-up benchmark takes (what ``rows_at_targets`` reads, and ``--out``)."""
    ap.add_argument("--speedups", nargs="+", type=float, default=[2.0, 3.0], help="layer speed-up targets (chosen on dev)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--rows", type=int, default=None, help="dev rows to time (default: all)")
    ap.add_argument("--rows-bs1", type=int, default=300, help="dev rows to time at batch size 1")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sweep-points", type=int, default=60)
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")


def rows_at_targets(models: dict, criteria: dict[str, list[str]], full_from: str, enc: dict, pad: int, metric: str,
                    args: argparse.Namespace, options: dict[str, dict] | None = None) -> list[dict]:
    """``models[setting]``: a ``MultiExitModel``; ``criteria[setting]``: the criteria to time on it;
    ``full_from``: the setting whose backbone and last exit are the full model. Thresholds are
    chosen on the recorded ``enc`` rows (dev) at the layer speed-up nearest each of
    ``args.speedups``; ``args`` also gives ``batch_sizes``, ``rows_bs1``, ``repeats``,
    ``sweep_points``. ``options[criterion]``: settings besides the threshold (COBEE's patience)."""
    options = options or {}
    methods, chosen, records = {"full": full_model_runner(models[full_from])}, {}, {}
    full_quality = None
    for setting, model in models.items():
        regression = model.config.regression
        rec = records[setting] = record_exits(model, batches(enc, 64, pad))
        if setting == full_from:
            full_quality = task_score(metric, rec.logits[-1], rec.labels, regression)
        for name in criteria[setting]:
            curve = sweep(model, name, {"dev": rec}, metric, regression, args.sweep_points, options.get(name))
            for target in args.speedups:
                point = nearest_speedup(curve, target)["dev"]
                label = f"{setting}/{name}@{target:g}x"
                chosen[label] = (setting, make_criterion(name, point["threshold"], **options.get(name, {})), point)
                methods[label] = exit_runner(model, chosen[label][1])

    rows = []
    for bs in args.batch_sizes:
        n = len(enc["labels"]) if bs > 1 else min(args.rows_bs1, len(enc["labels"]))
        sub = {k: v[:n] for k, v in enc.items()}
        tp = measure_throughput(list(batches(sub, bs, pad)), methods, repeats=args.repeats)
        rows.append({"method": "full", "batch_size": bs, "timed_rows": n, "threshold": None, "timed_layer_speedup": 1.0,
                     "quality": full_quality, "throughput": tp["full"], "wallclock_speedup": 1.0,
                     "layer_speedup": 1.0, "flops_speedup": 1.0})
        for label, (setting, crit, point) in chosen.items():
            model = models[setting]
            timed = records[setting].head(n)
            timed_layers = simulate(crit, timed.logits, timed.scores)[0]
            rows.append({"method": label, "batch_size": bs, "timed_rows": n, "threshold": point["threshold"],
                         "timed_layer_speedup": model.num_layers / timed_layers.double().mean().item(),
                         "quality": point["quality"], "throughput": tp[label], "wallclock_speedup": tp[label] / tp["full"],
                         "layer_speedup": point["layer_speedup"], "flops_speedup": point["flops_speedup"]})
    return rows
