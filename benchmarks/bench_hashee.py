"""Benchmark: HashEE (token-level exit) vs the full model vs sequence-level entropy/patience exit.

All methods are timed in one process, interleaved per repeat, medians over repeats, on the
task's dev split:

- ``full``: the single-exit fine-tuned backbone (``reference/single-exit`` in the task's
  artifact folder, ``flows/layout.py``), all layers;
- ``hashee-<kind>``: the pipeline's HashEE model (``hashee/default``);
- ``entropy`` / ``patience``: the default run's multi-exit model (``--strategy``, default
  alternating) with batched compaction, at the fastest dev threshold whose accuracy stays
  within ``--tolerance`` points of the full model.

    python benchmarks/bench_hashee.py --out bench_hashee.json

Writes the same JSON row format as ``bench_early_exit.py`` with ``--out``.
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

from bench_early_exit import machine, operating_point, print_rows  # noqa: E402
from flows.layout import Layout  # noqa: E402
from models.criteria import make_criterion  # noqa: E402
from models.flops import full_model_flops  # noqa: E402
from models.hashee import hashee_instance_flops  # noqa: E402
from models.metrics import task_score  # noqa: E402
from models.timing import exit_runner, full_model_runner, measure_throughput  # noqa: E402
from models.training import record_exits  # noqa: E402
from tasks.backbones import load_checkpoint  # noqa: E402
from config.params import load_params  # noqa: E402
from tasks.features import batches, encode_split  # noqa: E402
from tasks.hashee import predict  # noqa: E402
from tasks.io import atomic_write_json  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--strategy", default="alternating", help="multi-exit model for entropy/patience")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 128])
    ap.add_argument("--rows-bs1", type=int, default=300, help="dev rows timed at batch size 1 (all rows otherwise)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=1.5, help="max accuracy drop (points) of entropy/patience")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    layout = Layout.from_params(params)
    paths = {"full": layout.reference / "checkpoint", "hashee": layout.hashee("default").train / "checkpoint",
             "multi": layout.train(args.strategy) / "checkpoint"}
    for name, p in paths.items():
        if not (p / "exitflow.json").exists():
            ap.error(f"missing {name} checkpoint at {p}; run `exitflow run` first")
    torch.manual_seed(params.seed)
    attn = params.backbone.attn_implementation
    full, tokenizer, meta = load_checkpoint(paths["full"], attn)
    hashee, _, _ = load_checkpoint(paths["hashee"], attn)
    multi, _, _ = load_checkpoint(paths["multi"], attn)
    metric, regression, pad = meta["metric"], full.config.regression, tokenizer.pad_token_id or 0
    enc = encode_split(layout.data, meta["task"], "dev", tokenizer, params.backbone.max_length, layout.token_cache,
                       None, params.seed)
    labels = torch.tensor(enc["labels"])

    def quality(model):
        return task_score(metric, predict(model, enc, 64, pad), labels, regression)

    full_q, hashee_q = quality(full), quality(hashee)
    lengths = torch.tensor([len(ids) for ids in enc["input_ids"]])
    full_flops = full_model_flops(full, lengths).sum().item()
    hashee_flops = sum(hashee_instance_flops(hashee, hashee.exit_table[torch.tensor(ids)].tolist()) for ids in enc["input_ids"])
    exits = torch.cat([hashee.exit_table[torch.tensor(ids)] for ids in enc["input_ids"]]).float()
    kind = params.hashee.kind
    points = {"full": {"quality": full_q, "layer_speedup": 1.0, "flops_speedup": 1.0, "threshold": None},
              f"hashee-{kind}": {"quality": hashee_q, "layer_speedup": full.num_layers / exits.mean().item(),
                                 "flops_speedup": full_flops / hashee_flops, "threshold": None}}
    rec = record_exits(multi, batches(enc, 64, pad))
    runners = {"full": full_model_runner(full), f"hashee-{kind}": exit_runner(hashee, None)}
    for name in ("entropy", "patience"):
        p = operating_point(multi, rec, name, metric, regression, full_q, args.tolerance)
        if p is None:
            print(f"{name}: no threshold keeps dev quality within {args.tolerance} of the full model ({full_q:.2f})")
            continue
        points[name] = p
        runners[name] = exit_runner(multi, make_criterion(name, p["threshold"]))
    rows = []
    for bs in args.batch_sizes:
        n = len(enc["labels"]) if bs > 1 else min(args.rows_bs1, len(enc["labels"]))
        sub = {k: v[:n] for k, v in enc.items()}
        tp = measure_throughput(list(batches(sub, bs, pad)), runners, repeats=args.repeats)
        for name in runners:
            p = points[name]
            rows.append({"method": name, "batch_size": bs, "timed_rows": n, "threshold": p["threshold"], "quality": p["quality"],
                         "throughput": tp[name], "wallclock_speedup": tp[name] / tp["full"],
                         "layer_speedup": p["layer_speedup"], "flops_speedup": p["flops_speedup"]})
    result = {"backbone": params.backbone.name, "task": meta["task"], "split": "dev", "machine": machine(),
              "repeats": args.repeats, "hash": params.hashee.name, "rows": rows}
    print_rows(result, "flops_speedup")
    if args.out is not None:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
