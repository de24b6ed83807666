"""Benchmark: Global Past-Future vs local exits vs the full model, side by side in one process.

Loads the ``exitflow past-future`` models of the named settings (default: ``concat-future``,
``local-weighted``) for one task, picks each (setting, criterion)'s threshold on dev at the
layer speed-up nearest each ``--speedups`` target, and times real early exit (batch
compaction; a Past-Future row also pays its poolers, learners, gate and past aggregate) at
each batch size against the full model: the ``local-weighted`` backbone with its last head
only, interleaved per repeat, medians over repeats.

    python benchmarks/bench_past_future.py --task sst2 --out bench_past_future.json

Writes the row format of ``bench_early_exit.py``; ``method`` reads ``<setting>/<criterion>@<target>x``.
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
from tasks.features import encode_split  # noqa: E402
from tasks.io import atomic_write_json  # noqa: E402
from tasks.past_future import LOCAL_PREFIX, check_setting  # noqa: E402

FULL_FROM = f"{LOCAL_PREFIX}weighted"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--task", default="sst2", help="a task of past_future.tasks")
    ap.add_argument("--settings", nargs="+", default=["concat-future", FULL_FROM],
                    help="Past-Future settings (concat, concat-future, vote, ...) or local-<strategy>")
    add_timing_arguments(ap)
    args = ap.parse_args(argv)

    params = load_params(args.params, [f"train.task={args.task}"])
    layout = Layout.from_params(params)
    if FULL_FROM not in args.settings:
        args.settings.append(FULL_FROM)  # its backbone + last head is the full model every row is timed against
    models = {}
    for setting in args.settings:
        ckpt = layout.past_future(setting).train / "checkpoint"
        try:
            check_setting(ckpt, setting)
        except (FileNotFoundError, ValueError) as err:
            ap.error(str(err))
        models[setting] = load_checkpoint(ckpt, params.backbone.attn_implementation)
    torch.manual_seed(params.seed)
    _, tokenizer, meta = models[FULL_FROM]
    enc = encode_split(layout.data, args.task, "dev", tokenizer, params.backbone.max_length, layout.token_cache,
                       args.rows, params.seed)
    pad = tokenizer.pad_token_id or 0

    criteria = {setting: ["entropy", "patience"] if setting.startswith(LOCAL_PREFIX) else ["entropy"] for setting in models}
    rows = rows_at_targets({s: m for s, (m, _, _) in models.items()}, criteria, FULL_FROM, enc, pad, meta["metric"], args)
    result = {"backbone": params.backbone.name, "task": args.task, "settings": args.settings, "split": "dev",
              "machine": machine(), "repeats": args.repeats, "rows": rows}
    print_rows(result, ratio_to="timed_layer_speedup")
    if args.out is not None:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
