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

Self-speculative decoding (``models/self_speculative.py``) is one more arm per ``--speculative
E:d`` setting (default: ``generate.speculative``), timed in the same interleaved repeats. Its rows
add ``identical`` (its tokens equal the full-depth loop's, every row), ``acceptance_rate``,
``tokens_per_step``, ``draft_layer``, ``draft_length``; its ``layer_speedup`` is L over the
sequential layer passes per decode token (a latency proxy), ``flops_speedup`` L over the layer
applications per token. ``--sweep`` first ranks (E, d) settings on the dev prompts by their
decode cost in layer units (``sweep_draft_settings``: machine-independent given
``--position-cost``) and adds the cheapest as an arm. Without an ``exitflow generate`` run,
``--criteria`` (nothing) with ``--prompts-file`` times full depth against self-speculative
decoding alone, on your prompts:

    python benchmarks/bench_generation.py --criteria --prompts-file my.jsonl --speculative 15:4 --out x.json --no-mlflow
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
from models.self_speculative import (  # noqa: E402
    DraftHead, check_speculative, decode_self_speculative, frequent_tokens, sweep_draft_settings,
)
from models.timing import measure_throughput  # noqa: E402
from config.params import load_params  # noqa: E402
from tasks.generation import (  # noqa: E402
    ADAPTATION_FILE, EXIT_SETS, chat_text, end_ids, load_exits, load_generation_decoder, prompt_batches, read_jsonl, rouge_l,
    run_generation, strip_end,
)
from tasks.io import atomic_write_json  # noqa: E402


def speculative_setting(text: str) -> tuple[int, int]:
    """``"E:d"`` -> ``(E, d)``."""
    try:
        layer, length = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speculative: expected E:d (draft layer : draft length), got {text!r}") from None
    return layer, length


def run_speculative(adapter, head, rows: list[dict], batch_size: int, setting: tuple[int, int], max_new_tokens: int,
                    ends: list[int], pad: int) -> dict:
    """One untimed self-speculative pass: sequences, summed acceptance stats and generated tokens."""
    sequences, steps, accepted, passes, applications = [], 0, 0, 0, 0
    for ids, padding in prompt_batches(rows, batch_size, pad):
        out = decode_self_speculative(adapter, ids, padding, *setting, max_new_tokens, ends, pad, head)
        sequences += out.sequences()
        steps += int(out.steps.sum())
        accepted += int(out.accepted.clamp(min=0).sum())
        passes += int(out.layer_passes().sum())
        applications += int(out.token_layers().sum())
    decode_tokens = sum(len(seq) - 1 for seq in sequences)
    return {"sequences": sequences, "tokens": sum(len(seq) for seq in sequences),
            "acceptance_rate": accepted / max(1, steps * setting[1]), "tokens_per_step": decode_tokens / max(1, steps),
            "layer_passes_per_token": passes / max(1, decode_tokens),
            "token_layers_per_token": applications / max(1, decode_tokens)}


def speculative_runner(adapter, head, setting: tuple[int, int], max_new_tokens: int, ends: list[int], pad: int):
    """One timed self-speculative decoding call on a batch."""
    return lambda b: decode_self_speculative(adapter, b["input_ids"], b["attention_mask"], *setting, max_new_tokens,
                                             ends, pad, head)


def tokenized_prompts(path: Path, tokenizer) -> list[dict]:
    """``{"prompt": ...}`` lines -> rows with ``prompt_ids`` (the model's chat template)."""
    rows = read_jsonl(path)
    for r in rows:
        r["prompt_ids"] = tokenizer(chat_text(tokenizer, r["prompt"]), add_special_tokens=False)["input_ids"]
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'method':<34}{'bs':>4}{'ROUGE-L':>9}{'tokens/s':>10}{'wall x':>8}{'layer x':>9}{'FLOPs x':>9}")
    for r in rows:
        q = "" if r["quality"] is None else f"{r['quality']:.3f}"
        f = "" if r["flops_speedup"] is None else f"{r['flops_speedup']:.2f}"
        spec = "" if "acceptance_rate" not in r else (f"  accept {r['acceptance_rate']:.2f}, {r['tokens_per_step']:.2f} "
                                                      f"tokens/step, identical {r['identical']}")
        print(f"{r['method']:<34}{r['batch_size']:>4}{q:>9}{r['throughput']:>10.1f}{r['wallclock_speedup']:>8.2f}"
              f"{r['layer_speedup']:>9.2f}{f:>9}{spec}")


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--prompts", type=int, default=32, help="test prompts timed at batch size > 1")
    ap.add_argument("--prompts-bs1", type=int, default=8, help="test prompts timed at batch size 1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--criteria", nargs="*", default=None,
                    help="default: every criterion in the report; none (the bare flag): no criterion arm")
    ap.add_argument("--speculative", nargs="*", type=speculative_setting, default=None, metavar="E:d",
                    help="self-speculative arms (default: generate.speculative); none (the bare flag): no such arm")
    ap.add_argument("--sweep", action="store_true", help="choose (E, d) on the dev prompts by layer cost; add it as an arm")
    ap.add_argument("--sweep-layers", nargs="+", type=int, default=[5, 10, 15, 20, 25])
    ap.add_argument("--sweep-lengths", nargs="+", type=int, default=[1, 2, 4, 6])
    ap.add_argument("--sweep-prompts", type=int, default=16, help="dev prompts the sweep decodes")
    ap.add_argument("--position-cost", type=float, default=0.04,
                    help="sweep cost of each further position in a layer pass, in one-position passes (issue 22 "
                         "measured 4-8 positions at about 1.25-1.3x one position on the 2-core CPU)")
    ap.add_argument("--prompts-file", type=Path, default=None,
                    help='time these {"prompt": ...} lines instead of the generate run\'s test responses; quality '
                         'is then measured against the full-depth loop\'s responses of this run')
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: generate.max_new_tokens")
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    ap.add_argument("--no-mlflow", action="store_true",
                    help="do not attach the JSON to the latest `generate` run of experiment exitflow-generate")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    cfg = params.generate
    spec_cfg = cfg.speculative
    max_new_tokens = args.max_new_tokens or cfg.max_new_tokens
    base = Layout.from_params(params).generate
    criteria = list(cfg.criteria) if args.criteria is None else args.criteria
    summary_path = base / "report" / "summary.json"
    if criteria and not summary_path.exists():
        sys.exit(f"error: {summary_path} not found; run `exitflow generate` first (or pass --criteria alone: no criterion arm)")
    summary = json.loads(summary_path.read_text()) if criteria else {}
    torch.manual_seed(params.seed)
    # generate.adapt: lora | full times the adapted decoder and the exits trained on it (issue 22)
    suffix = "" if cfg.adapt == "none" else f"-{cfg.adapt}"
    adapted_dir = base / f"adapt{suffix}" if suffix else None
    if adapted_dir is not None and not (adapted_dir / ADAPTATION_FILE).exists():
        sys.exit(f"error: {adapted_dir / ADAPTATION_FILE} not found; run `exitflow generate` with generate.adapt={cfg.adapt} first")
    lm, tokenizer = load_generation_decoder(cfg.decoder, adapted_dir)
    adapter = DecoderAdapter(lm)
    L, ends, pad = adapter.num_layers, end_ids(tokenizer), tokenizer.pad_token_id
    if args.prompts_file is not None:
        test = dev = tokenized_prompts(args.prompts_file, tokenizer)
    else:
        responses = base / "responses" / "test.jsonl"
        if not responses.exists():
            sys.exit(f"error: {responses} not found; run `exitflow generate` first, or pass --prompts-file")
        test, dev = read_jsonl(responses), read_jsonl(base / "responses" / "dev.jsonl")
    settings = [(spec_cfg.draft_layer, spec_cfg.draft_length)] if args.speculative is None else list(args.speculative)
    try:
        for layer, length in settings:
            check_speculative(layer, length, L)
    except ValueError as err:
        sys.exit(f"error: {err}")
    exits = ({name: load_exits(base / f"exits{suffix}" / name, adapter) for name in ("init", "consistentee")}
             if criteria or spec_cfg.draft_head == "exit" else {})
    draft_heads = speculative_draft_heads(adapter, spec_cfg, exits.get("init"), base, ends)
    sweep = None
    if args.sweep:
        batches = list(prompt_batches(dev[: args.sweep_prompts], max(args.batch_sizes), pad))
        sweep = sweep_draft_settings(adapter, batches, [x for x in args.sweep_layers if x < L], args.sweep_lengths,
                                     max_new_tokens, ends, pad, args.position_cost, draft_heads)
        print(f"sweep on {len(dev[: args.sweep_prompts])} dev prompts (position cost {args.position_cost}): cost per "
              f"token relative to full depth, cheapest first")
        for r in sweep:
            print(f"  E={r['draft_layer']:<3} d={r['draft_length']:<3} accept {r['acceptance_rate']:.3f}  "
                  f"tokens/step {r['tokens_per_step']:.2f}  relative cost {r['relative_cost']:.3f}")
        best = (sweep[0]["draft_layer"], sweep[0]["draft_length"])
        if best not in settings:
            settings.append(best)

    full_depth = DecoderExits(adapter, [L], exit_head="shared", policy=False)  # no exit points on the way
    methods = {"full": (full_depth, StaticExit(L), None)}
    for criterion in criteria:
        point = summary["operating_points"].get(criterion)
        marked = ""
        if point is None:  # no threshold reaches the bar on dev: its most accurate one
            curve = json.loads((base / f"evaluate{suffix}" / criterion / "curve.json").read_text())
            point = max((r for r in curve if r["split"] == "dev"), key=lambda r: r["rouge_l"])
            marked = " (below target)"
        methods[f"{criterion}@{point['threshold']:g}{marked}"] = (exits[EXIT_SETS.get(criterion, "init")],
                                                                 token_criterion(criterion, point["threshold"]), point)

    rows = []
    for bs in args.batch_sizes:
        prompts = test[: args.prompts if bs > 1 else args.prompts_bs1]
        batches = [{"input_ids": ids, "attention_mask": padding} for ids, padding in prompt_batches(prompts, bs, pad)]
        # one untimed pass per method: its tokens, exit layers and FLOPs (greedy: every pass is the same)
        runs = {name: run_generation(ex, rule, prompts, bs, max_new_tokens, ends, pad, desc=f"{name} bs{bs}")
                for name, (ex, rule, _) in methods.items()}
        spec_runs = {f"self-spec E={e} d={d}": ((e, d), run_speculative(adapter, draft_heads(e), prompts, bs, (e, d),
                                                                        max_new_tokens, ends, pad))
                     for e, d in settings}
        runners = {name: (lambda b, ex=ex, rule=rule: generate(ex, rule, b["input_ids"], b["attention_mask"],
                                                                max_new_tokens, ends, pad))
                   for name, (ex, rule, _) in methods.items()}
        for name, (setting, _) in spec_runs.items():
            runners[name] = speculative_runner(adapter, draft_heads(setting[0]), setting, max_new_tokens, ends, pad)
        runners["hf-generate"] = lambda b: lm.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                                       max_new_tokens=max_new_tokens, do_sample=False,
                                                       eos_token_id=ends, pad_token_id=pad)
        per_second = measure_throughput(batches, runners, repeats=args.repeats)  # prompts/s, interleaved, medians
        tokens = {name: run["tokens"] for name, run in runs.items()}
        tokens.update({name: run["tokens"] for name, (_, run) in spec_runs.items()})
        tokens["hf-generate"] = tokens["full"]  # the same greedy tokens as the full-depth loop (tested)
        throughput = {name: per_second[name] * tokens[name] / len(prompts) for name in runners}
        if args.prompts_file is not None:  # the reference: this run's full-depth responses
            references = [tokenizer.decode(strip_end(s, ends)) for s in runs["full"]["sequences"]]
        else:
            references = [r["response"] for r in prompts]
        for name, (ex, rule, point) in methods.items():
            run = runs[name]
            texts = [tokenizer.decode(strip_end(s, ends)) for s in run["sequences"]]
            layers = run["exit_layers"].float()
            rows.append({"method": name, "batch_size": bs, "prompts": len(prompts),
                         "quality": sum(rouge_l(texts, references)) / len(prompts),
                         "throughput": throughput[name], "wallclock_speedup": throughput[name] / throughput["full"],
                         "layer_speedup": L / layers.mean().item() if layers.numel() else 1.0,
                         "flops_speedup": run["full_flops"] / max(1, run["decode_flops"])})
        for name, ((layer, length), run) in spec_runs.items():
            texts = [tokenizer.decode(strip_end(s, ends)) for s in run["sequences"]]
            rows.append({"method": name, "batch_size": bs, "prompts": len(prompts),
                         "quality": sum(rouge_l(texts, references)) / len(prompts),
                         "throughput": throughput[name], "wallclock_speedup": throughput[name] / throughput["full"],
                         "layer_speedup": L / run["layer_passes_per_token"],
                         "flops_speedup": L / run["token_layers_per_token"],
                         "identical": run["sequences"] == runs["full"]["sequences"],
                         "acceptance_rate": run["acceptance_rate"], "tokens_per_step": run["tokens_per_step"],
                         "draft_layer": layer, "draft_length": length, "draft_head": spec_cfg.draft_head,
                         "draft_vocab": spec_cfg.draft_vocab})
        rows.append({"method": "hf-generate (full depth)", "batch_size": bs, "prompts": len(prompts), "quality": None,
                     "throughput": throughput["hf-generate"],
                     "wallclock_speedup": throughput["hf-generate"] / throughput["full"],
                     "layer_speedup": 1.0, "flops_speedup": None})
    print(machine())
    print_table(rows)
    if args.out:
        atomic_write_json(args.out, {"machine": machine(), "torch_threads": torch.get_num_threads(), "decoder": cfg.decoder,
                                     "max_new_tokens": max_new_tokens, "repeats": args.repeats,
                                     "command": "python benchmarks/bench_generation.py " + " ".join(argv or sys.argv[1:]),
                                     "position_cost": args.position_cost, "sweep": sweep, "rows": rows})
        if not args.no_mlflow:
            attach_to_latest_run(params, args.out)
    return rows


def speculative_draft_heads(adapter, spec_cfg, init_exits, base: Path, ends: list[int]):
    """``E -> DraftHead`` as ``generate.speculative`` says: the final norm or the trained init exit
    at E, over the whole vocabulary or the ``draft_vocab`` most frequent train-response tokens."""
    vocab = None
    if spec_cfg.draft_vocab:
        train = base / "responses" / "train.jsonl"
        if not train.exists():
            sys.exit(f"error: generate.speculative.draft_vocab needs {train}; run `exitflow generate` first")
        vocab = frequent_tokens((r["response_ids"] for r in read_jsonl(train)), spec_cfg.draft_vocab, always=ends)
    heads: dict[int, DraftHead] = {}

    def head(layer: int) -> DraftHead:
        if layer not in heads:
            if spec_cfg.draft_head == "exit":
                try:
                    heads[layer] = DraftHead.from_exits(init_exits, layer, vocab)
                except ValueError as err:
                    sys.exit(f"error: {err}")
            else:
                heads[layer] = DraftHead(adapter, vocab=vocab)
        return heads[layer]
    return head


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
