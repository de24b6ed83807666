"""Benchmark: LECO's learned exits (COBEE, entropy, patience, LTE) vs JT + linear exits vs the
full model, side by side in one process.

Loads the ``exitflow leco`` models of one task (the retrained derived exits and the
``jt-linear`` baseline), picks each (model, criterion)'s threshold on dev at the layer speed-up
nearest each ``--speedups`` target, and times real early exit (batch compaction; a LECO row
pays its learned exits at every layer it passes) at each batch size against the full model: the
``jt-linear`` backbone with its last linear exit only, interleaved per repeat, medians over repeats.

    python benchmarks/bench_leco.py --task sst2 --out benchmarks/results/leco_sst2.json

Writes the row format of ``bench_early_exit.py``; ``method`` reads ``<model>/<criterion>@<target>x``.
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

from benchmarks.bench_early_exit import machine, print_rows  # noqa: E402
from benchmarks.targets import add_timing_arguments, rows_at_targets  # noqa: E402
from flows.layout import Layout  # noqa: E402
from tasks.backbones import load_checkpoint  # noqa: E402
from config.params import load_params  # noqa: E402
from tasks.evaluate import criterion_options  # noqa: E402
from tasks.features import encode_split  # noqa: E402
from tasks.io import atomic_write_json  # noqa: E402

FULL_FROM = "jt-linear"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--task", default="sst2", help="a task of leco.tasks")
    ap.add_argument("--criteria", nargs="+", default=None, help="criteria on the LECO model (default: leco.criteria)")
    add_timing_arguments(ap)
    args = ap.parse_args(argv)

    params = load_params(args.params, [f"train.task={args.task}"])
    layout = Layout.from_params(params)
    folders = {"leco": layout.leco_model.train, FULL_FROM: layout.leco_baseline(FULL_FROM).train}
    models = {}
    for name, folder in folders.items():
        if not (folder / "checkpoint" / "exitflow.json").exists():
            ap.error(f"{folder / 'checkpoint'}: no trained {name} model for {args.task}; run `exitflow leco --task {args.task}` first")
        models[name] = load_checkpoint(folder / "checkpoint", params.backbone.attn_implementation)
    torch.manual_seed(params.seed)
    _, tokenizer, meta = models[FULL_FROM]
    enc = encode_split(layout.data, args.task, "dev", tokenizer, params.backbone.max_length, layout.token_cache,
                       args.rows, params.seed)
    criteria = {"leco": args.criteria or params.leco.criteria, FULL_FROM: ["patience"]}
    evaluate = params.evaluate.model_copy(update={"cobee_patience": params.leco.cobee_patience})  # as the flow evaluates
    options = {name: criterion_options(name, evaluate) for names in criteria.values() for name in names}
    rows = rows_at_targets({n: m for n, (m, _, _) in models.items()}, criteria, FULL_FROM, enc, tokenizer.pad_token_id or 0,
                           meta["metric"], args, options)
    result = {"backbone": params.backbone.name, "task": args.task, "models": list(models), "split": "dev",
              "machine": machine(), "repeats": args.repeats, "rows": rows}
    print_rows(result, ratio_to="timed_layer_speedup")
    if args.out is not None:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
