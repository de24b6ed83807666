"""Benchmark: full model vs batched early exit (entropy, LTE), side by side in one process.

For a trained checkpoint (default: the pipeline's ``alternating`` model) on the task's dev
split: pick each criterion's threshold as the fastest one whose dev quality stays within
``--tolerance`` points of the full model, then time real inference (batch compaction) at
each batch size against the full model, interleaved per repeat, medians over repeats.

    python benchmarks/bench_early_exit.py --strategy alternating --out bench.json

Writes ``{"backbone", "task", "machine", "rows": [{"method", "batch_size", "quality",
"throughput", "wallclock_speedup", "layer_speedup", "flops_speedup"}, ...]}`` with ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from flows.layout import Layout  # noqa: E402
from models.criteria import make_criterion, simulate  # noqa: E402
from models.metrics import task_score  # noqa: E402
from models.operating import fastest_within, sweep, usable_criteria  # noqa: E402
from models.timing import exit_runner, measure_throughput  # noqa: E402
from models.training import record_exits  # noqa: E402
from tasks.backbones import load_checkpoint  # noqa: E402
from config.params import load_params  # noqa: E402
from tasks.features import batches, encode_split  # noqa: E402
from tasks.io import atomic_write_json  # noqa: E402


def machine() -> str:
    """The CPU machine the benchmark ran on (``flows.runtime.machine_description``)."""
    from flows.runtime import machine_description

    return machine_description("cpu")


def print_rows(result: dict, ratio_to: str = "layer_speedup") -> None:
    """The benchmark table; the last column is wall-clock speed-up / ``ratio_to``."""
    print(f"{result['backbone']} on {result['task']} {result['split']}; {result['machine']}")
    print(f"{'method':<18}{'bs':>5}{'quality':>9}{'samples/s':>11}{'wall x':>8}{'layer x':>9}{'FLOPs x':>9}  wall/{ratio_to.split('_')[0]}")
    for r in result["rows"]:
        print(f"{r['method']:<18}{r['batch_size']:>5}{r['quality']:>9.2f}{r['throughput']:>11.1f}{r['wallclock_speedup']:>8.2f}"
              f"{r['layer_speedup']:>9.2f}{r['flops_speedup']:>9.2f}  {r['wallclock_speedup'] / r[ratio_to]:.2f}")


def operating_point(model, rec, name, metric, regression, full_quality, tolerance, points=60):
    """The fastest dev threshold of ``name`` whose dev quality stays within ``tolerance`` points."""
    curve = sweep(model, name, {"dev": rec}, metric, regression, points)
    best = fastest_within(curve, full_quality - tolerance)
    return best and best["dev"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--strategy", default="alternating",
                    help="which trained checkpoint under artifacts/<task>/seed-<seed>/train/")
    ap.add_argument("--criteria", nargs="+", default=["entropy", "lte"])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--rows", type=int, default=None, help="dev rows to time (default: all)")
    ap.add_argument("--rows-bs1", type=int, default=300, help="dev rows to time at batch size 1")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=1.0, help="max quality drop (points) vs the full model")
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    layout = Layout.from_params(params)
    ckpt = layout.train(args.strategy) / "checkpoint"
    if not (ckpt / "exitflow.json").exists():
        ap.error(f"no checkpoint at {ckpt}; run `exitflow run` (or `exitflow train --strategy {args.strategy}`) first")
    torch.manual_seed(params.seed)
    model, tokenizer, meta = load_checkpoint(ckpt, params.backbone.attn_implementation)
    metric, regression = meta["metric"], model.config.regression
    enc = encode_split(layout.data, meta["task"], "dev", tokenizer, params.backbone.max_length, layout.token_cache,
                       args.rows, params.seed)
    pad = tokenizer.pad_token_id or 0
    rec = record_exits(model, batches(enc, 64, pad))
    full_quality = task_score(metric, rec.logits[-1], rec.labels, regression)
    names = usable_criteria(args.criteria, model)
    points = {n: operating_point(model, rec, n, metric, regression, full_quality, args.tolerance) for n in names}
    methods = {"full": None, **{n: make_criterion(n, p["threshold"]) for n, p in points.items() if p is not None}}

    rows = []
    for bs in args.batch_sizes:
        n = len(enc["labels"]) if bs > 1 else min(args.rows_bs1, len(enc["labels"]))
        sub = {k: v[:n] for k, v in enc.items()}
        tp = measure_throughput(list(batches(sub, bs, pad)), {n: exit_runner(model, c) for n, c in methods.items()},
                                repeats=args.repeats)
        timed = rec.head(n)
        for name, crit in methods.items():
            p = points.get(name) or {"quality": full_quality, "layer_speedup": 1.0, "flops_speedup": 1.0, "threshold": None}
            # the layer speed-up of the rows actually timed, so wall/layer compares like with like
            timed_layers = simulate(crit, timed.logits, timed.scores)[0] if crit is not None else None
            timed_speedup = 1.0 if crit is None else model.num_layers / timed_layers.double().mean().item()
            rows.append({"method": name, "batch_size": bs, "timed_rows": n, "threshold": p["threshold"],
                         "timed_layer_speedup": timed_speedup,
                         "quality": p["quality"], "throughput": tp[name], "wallclock_speedup": tp[name] / tp["full"],
                         "layer_speedup": p["layer_speedup"], "flops_speedup": p["flops_speedup"]})
    result = {"backbone": params.backbone.name, "task": meta["task"], "strategy": args.strategy, "split": "dev",
              "machine": machine(), "repeats": args.repeats, "rows": rows}
    print_rows(result)
    if args.out is not None:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
