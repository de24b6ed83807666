"""Benchmark: early exit in generation against full-depth generation of the same decoder, side
by side in one process.

Loads the ``exitflow generate`` exits and, per criterion, the fastest threshold whose *dev*
ROUGE-L reaches ``generate.rouge_target`` (``report/summary.json``; a criterion with none is
timed at its most accurate threshold and marked). For each batch size, every repeat times
full-depth generation (the same exit loop with every token at layer L) and each method on the
same test prompts, interleaved after one warm-up pass (``models.timing.measure_throughput``);
medians over repeats. HF ``generate()`` at full depth is timed
too, as a reference that the loop is not a slow strawman.

    python benchmarks/bench_generation.py --out benchmarks/results/generation.json

Rows: method, batch_size, quality (ROUGE-L against the full-depth responses), throughput
(generated tokens/s over whole ``generate`` calls, prefill included, so it dilutes the decode
speed-up a little), wallclock_speedup (throughput / full throughput), layer_speedup and
flops_speedup (decode steps only: the first token of each response comes from the prefill).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_early_exit import machine  # noqa: E402
from flows.layout import Layout  # noqa: E402
from models.adapters.decoder import DecoderAdapter  # noqa: E402
from models.generation import DecoderExits, StaticExit, generate, token_criterion  # noqa: E402
from models.timing import measure_throughput  # noqa: E402
from config.params import load_params  # noqa: E402
from tasks.backbones import load_decoder  # noqa: E402
from tasks.generation import (  # noqa: E402
    EXIT_SETS, end_ids, load_exits, prompt_batches, read_jsonl, rouge_l, run_generation, strip_end,
)
from tasks.io import atomic_write_json  # noqa: E402


def print_table(rows: list[dict]) -> None:
    print(f"{'method':<34}{'bs':>4}{'ROUGE-L':>9}{'tokens/s':>10}{'wall x':>8}{'layer x':>9}{'FLOPs x':>9}")
    for r in rows:
        q = "" if r["quality"] is None else f"{r['quality']:.3f}"
        f = "" if r["flops_speedup"] is None else f"{r['flops_speedup']:.2f}"
        print(f"{r['method']:<34}{r['batch_size']:>4}{q:>9}{r['throughput']:>10.1f}{r['wallclock_speedup']:>8.2f}"
              f"{r['layer_speedup']:>9.2f}{f:>9}")


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--prompts", type=int, default=32, help="test prompts timed at batch size > 1")
    ap.add_argument("--prompts-bs1", type=int, default=8, help="test prompts timed at batch size 1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--criteria", nargs="+", default=None, help="default: every criterion in the report")
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    ap.add_argument("--no-mlflow", action="store_true",
                    help="do not attach the JSON to the latest `generate` run of experiment exitflow-generate")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    cfg = params.generate
    base = Layout.from_params(params).generate
    summary_path = base / "report" / "summary.json"
    if not summary_path.exists():
        sys.exit(f"error: {summary_path} not found; run `exitflow generate` first")
    summary = json.loads(summary_path.read_text())
    torch.manual_seed(params.seed)
    lm, tokenizer = load_decoder(cfg.decoder)
    adapter = DecoderAdapter(lm)
    L, ends, pad = adapter.num_layers, end_ids(tokenizer), tokenizer.pad_token_id
    exits = {name: load_exits(base / "exits" / name, adapter) for name in ("init", "consistentee")}
    test = read_jsonl(base / "responses" / "test.jsonl")

    full_depth = DecoderExits(adapter, [L], exit_head="shared", policy=False)  # no exit points on the way
    methods = {"full": (full_depth, StaticExit(L), None)}
    for criterion in args.criteria or list(cfg.criteria):
        point = summary["operating_points"].get(criterion)
        marked = ""
        if point is None:  # no threshold reaches the bar on dev: its most accurate one
            curve = json.loads((base / "evaluate" / criterion / "curve.json").read_text())
            point = max((r for r in curve if r["split"] == "dev"), key=lambda r: r["rouge_l"])
            marked = " (below target)"
        methods[f"{criterion}@{point['threshold']:g}{marked}"] = (exits[EXIT_SETS.get(criterion, "init")],
                                                                 token_criterion(criterion, point["threshold"]), point)

    rows = []
    for bs in args.batch_sizes:
        prompts = test[: args.prompts if bs > 1 else args.prompts_bs1]
        batches = [{"input_ids": ids, "attention_mask": padding} for ids, padding in prompt_batches(prompts, bs, pad)]
        # one untimed pass per method: its tokens, exit layers and FLOPs (greedy: every pass is the same)
        runs = {name: run_generation(ex, rule, prompts, bs, cfg.max_new_tokens, ends, pad, desc=f"{name} bs{bs}")
                for name, (ex, rule, _) in methods.items()}
        runners = {name: (lambda b, ex=ex, rule=rule: generate(ex, rule, b["input_ids"], b["attention_mask"],
                                                                cfg.max_new_tokens, ends, pad))
                   for name, (ex, rule, _) in methods.items()}
        runners["hf-generate"] = lambda b: lm.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                                       max_new_tokens=cfg.max_new_tokens, do_sample=False,
                                                       eos_token_id=ends, pad_token_id=pad)
        per_second = measure_throughput(batches, runners, repeats=args.repeats)  # prompts/s, interleaved, medians
        tokens = {name: run["tokens"] for name, run in runs.items()}
        tokens["hf-generate"] = tokens["full"]  # the same greedy tokens as the full-depth loop (tested)
        throughput = {name: per_second[name] * tokens[name] / len(prompts) for name in runners}
        for name, (ex, rule, point) in methods.items():
            run = runs[name]
            texts = [tokenizer.decode(strip_end(s, ends)) for s in run["sequences"]]
            layers = run["exit_layers"].float()
            rows.append({"method": name, "batch_size": bs, "prompts": len(prompts),
                         "quality": sum(rouge_l(texts, [r["response"] for r in prompts])) / len(prompts),
                         "throughput": throughput[name], "wallclock_speedup": throughput[name] / throughput["full"],
                         "layer_speedup": L / layers.mean().item() if layers.numel() else 1.0,
                         "flops_speedup": run["full_flops"] / max(1, run["decode_flops"])})
        rows.append({"method": "hf-generate (full depth)", "batch_size": bs, "prompts": len(prompts), "quality": None,
                     "throughput": throughput["hf-generate"],
                     "wallclock_speedup": throughput["hf-generate"] / throughput["full"],
                     "layer_speedup": 1.0, "flops_speedup": None})
    print(machine())
    print_table(rows)
    if args.out:
        atomic_write_json(args.out, {"machine": machine(), "torch_threads": torch.get_num_threads(), "decoder": cfg.decoder,
                                     "max_new_tokens": cfg.max_new_tokens, "repeats": args.repeats,
                                     "command": "python benchmarks/bench_generation.py " + " ".join(argv or sys.argv[1:]),
                                     "rows": rows})
        if not args.no_mlflow:
            attach_to_latest_run(params, args.out)
    return rows


def attach_to_latest_run(params, path: Path) -> None:
    """Log ``path`` as an artifact (``benchmark/``) of the latest ``generate`` parent run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(params))
    client = MlflowClient()
    experiment = client.get_experiment_by_name("exitflow-generate")
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name = 'generate'",
                              order_by=["attributes.start_time DESC"], max_results=1) if experiment else []
    if not runs:
        print("no `generate` run in MLflow experiment exitflow-generate: the JSON is not attached")
        return
    client.log_artifact(runs[0].info.run_id, str(path), "benchmark")
    print(f"attached {path} to MLflow run {runs[0].info.run_id}")


if __name__ == "__main__":
    main()
