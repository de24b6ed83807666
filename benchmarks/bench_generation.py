"""Benchmark: early exit in generation against full-depth generation of the same decoder, side
by side in one process.

Loads the ``exitflow generate`` exits and, per criterion, the fastest threshold whose *dev*
ROUGE-L reaches ``generate.rouge_target`` (read from ``evaluate/<criterion>/curve.json`` by the
report's rule; a criterion with none is timed at its most accurate threshold and marked). For each
batch size, every repeat times full-depth generation (the same exit loop with every token at layer
L) and each method on the same test prompts, interleaved after one warm-up pass
(``models.timing.measure_throughput``); medians over repeats. HF ``generate()`` at full depth is
timed too, as a reference that the loop is not a slow strawman.

``--adapted lora`` (or ``generate.adapt: lora``) adds the decoder adapted by ``exitflow generate
--set generate.adapt=lora`` in the same interleaved repeats: its full depth, its criteria at their
own dev operating points (``evaluate-lora/``) and its self-speculative arms, named ``lora: ...``.
Quality is always ROUGE-L against the original model's responses; ``wallclock_speedup`` is
against full depth of the same weights, ``wallclock_speedup_vs_original`` against the original's.

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
from collections.abc import Callable
from dataclasses import dataclass, field
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
from tasks.reports.generation import operating_point  # noqa: E402


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


@dataclass
class Variant:
    """One decoder the benchmark times: the original (``exits/``, ``evaluate/``) or one adapted by
    ``exitflow generate --set generate.adapt=<mode>`` (``adapt-<mode>/``, ``exits-<mode>/``,
    ``evaluate-<mode>/``). ``prefix`` starts its method names (empty for the original)."""

    adapt: str
    lm: object
    tokenizer: object
    adapter: DecoderAdapter
    exits: dict
    draft_heads: Callable
    settings: list
    sweep: list | None = None
    reports: dict = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        return "" if self.adapt == "none" else f"-{self.adapt}"

    @property
    def prefix(self) -> str:
        return "" if self.adapt == "none" else f"{self.adapt}: "

    @property
    def label(self) -> str:
        return "original" if self.adapt == "none" else f"adapted ({self.adapt})"


def load_variant(adapt: str, base: Path, cfg, spec_cfg, criteria: list[str], settings: list) -> Variant:
    """The decoder of ``adapt`` (``none``: the original), its trained exits when a criterion or
    the draft head needs them, its draft heads and its distillation/adaptation reports."""
    suffix = "" if adapt == "none" else f"-{adapt}"
    adapted_dir = base / f"adapt{suffix}" if suffix else None
    if adapted_dir is not None and not (adapted_dir / ADAPTATION_FILE).exists():
        sys.exit(f"error: {adapted_dir / ADAPTATION_FILE} not found; run `exitflow generate --set generate.adapt={adapt}` first")
    lm, tokenizer = load_generation_decoder(cfg.decoder, adapted_dir)
    adapter = DecoderAdapter(lm)
    try:
        for layer, length in settings:
            check_speculative(layer, length, adapter.num_layers)
    except ValueError as err:
        sys.exit(f"error: {err}")
    exits = {}
    if criteria or spec_cfg.draft_head == "exit":
        for name in ("init", "consistentee"):
            folder = base / f"exits{suffix}" / name
            if not folder.exists():
                sys.exit(f"error: {folder} not found; run `exitflow generate` with generate.adapt={adapt} first")
            exits[name] = load_exits(folder, adapter)
    reports = {name: json.loads(path.read_text()) for name, path in
               (("distillation", base / f"distill{suffix}" / "report.json"),
                ("adaptation", base / f"adapt{suffix}" / "report.json")) if path.exists()}
    return Variant(adapt, lm, tokenizer, adapter, exits, speculative_draft_heads(adapter, spec_cfg, exits.get("init"),
                                                                               base, end_ids(tokenizer)),
                   list(settings), reports=reports)


def criterion_methods(variant: Variant, criteria: list[str], base: Path, rouge_target: float) -> dict:
    """``name -> (exits, rule)`` for each criterion at its dev operating point, read
    from the variant's ``evaluate*/<criterion>/curve.json`` by the report's rule
    (``tasks.reports.generation.operating_point``); a criterion none of whose thresholds reaches
    ``rouge_target`` on dev is timed at its most accurate one and marked."""
    methods = {}
    for criterion in criteria:
        curve_path = base / f"evaluate{variant.suffix}" / criterion / "curve.json"
        if not curve_path.exists():
            sys.exit(f"error: {curve_path} not found; run `exitflow generate` with generate.adapt={variant.adapt} first "
                     f"(or pass --criteria alone: no criterion arm)")
        point = operating_point(json.loads(curve_path.read_text()), rouge_target)
        if point is None:
            sys.exit(f"error: {curve_path} has no threshold read on both dev and test; re-run `exitflow generate`")
        marked = "" if point["dev"]["rouge_l"] >= rouge_target else " (below target)"
        name = f"{variant.prefix}{criterion}@{point['threshold']:g}{marked}"
        methods[name] = (variant.exits[EXIT_SETS.get(criterion, "init")], token_criterion(criterion, point["threshold"]))
    return methods


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--prompts", type=int, default=32, help="test prompts timed at batch size > 1")
    ap.add_argument("--prompts-bs1", type=int, default=8, help="test prompts timed at batch size 1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--criteria", nargs="*", default=None,
                    help="default: every criterion of generate.criteria; none (the bare flag): no criterion arm")
    ap.add_argument("--adapted", choices=["lora", "full"], default=None,
                    help="also time the decoder adapted by `exitflow generate --set generate.adapt=<mode>` (its "
                         "criteria and self-speculative arms), side by side with the original in the same repeats")
    ap.add_argument("--speculative", nargs="*", type=speculative_setting, default=None, metavar="E:d",
                    help="self-speculative arms (default: generate.speculative); none (the bare flag): no such arm")
    ap.add_argument("--draft-head", choices=["shared", "exit"], default=None,
                    help="the draft's head (default: generate.speculative.draft_head): shared = final norm + LM head, "
                         "exit = the trained init exit at E")
    ap.add_argument("--draft-vocab", type=int, default=None,
                    help="draft over the K most frequent response tokens (default: generate.speculative.draft_vocab; 0: all)")
    ap.add_argument("--sweep", action="store_true",
                    help="choose (E, d) on the dev prompts by layer cost, per decoder; add it as an arm")
    ap.add_argument("--sweep-layers", nargs="+", type=int, default=[5, 10, 15, 20, 25])
    ap.add_argument("--sweep-lengths", nargs="+", type=int, default=[1, 2, 4, 6])
    ap.add_argument("--sweep-prompts", type=int, default=16, help="dev prompts the sweep decodes")
    ap.add_argument("--position-cost", type=float, default=0.04,
                    help="sweep cost of each further position in a layer pass, in one-position passes (issue 22 "
                         "measured 4-8 positions at about 1.25-1.3x one position on the 2-core CPU)")
    ap.add_argument("--prompts-file", type=Path, default=None,
                    help='time these {"prompt": ...} lines instead of the generate run\'s test responses; quality '
                         'is then measured against the original full-depth loop\'s responses of this run')
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: generate.max_new_tokens")
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    ap.add_argument("--no-mlflow", action="store_true",
                    help="do not attach the JSON to the latest `generate` run of experiment exitflow-generate")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    cfg = params.generate
    spec_cfg = cfg.speculative.model_copy(update={k: v for k, v in (("draft_head", args.draft_head),
                                                                    ("draft_vocab", args.draft_vocab)) if v is not None})
    if spec_cfg.draft_vocab < 0:
        sys.exit(f"error: --draft-vocab {spec_cfg.draft_vocab}: expected 0 (every token) or a positive count")
    max_new_tokens = args.max_new_tokens or cfg.max_new_tokens
    base = Layout.from_params(params).generate
    criteria = list(cfg.criteria) if args.criteria is None else args.criteria
    torch.manual_seed(params.seed)
    # the original decoder always; generate.adapt and --adapted add the adapted one (issue 22)
    adapts = list(dict.fromkeys(a for a in ("none", cfg.adapt, args.adapted) if a))
    settings = [(spec_cfg.draft_layer, spec_cfg.draft_length)] if args.speculative is None else list(args.speculative)
    variants = [load_variant(a, base, cfg, spec_cfg, criteria, settings) for a in adapts]
    original = variants[0]
    tokenizer, lm = original.tokenizer, original.lm
    L, ends, pad = original.adapter.num_layers, end_ids(tokenizer), tokenizer.pad_token_id
    if args.prompts_file is not None:
        test = dev = tokenized_prompts(args.prompts_file, tokenizer)
    else:
        responses = base / "responses" / "test.jsonl"
        if not responses.exists():
            sys.exit(f"error: {responses} not found; run `exitflow generate` first, or pass --prompts-file")
        test, dev = read_jsonl(responses), read_jsonl(base / "responses" / "dev.jsonl")
    if args.sweep:
        batches = list(prompt_batches(dev[: args.sweep_prompts], max(args.batch_sizes), pad))
        for v in variants:
            v.sweep = sweep_draft_settings(v.adapter, batches, [x for x in args.sweep_layers if x < L], args.sweep_lengths,
                                           max_new_tokens, ends, pad, args.position_cost, v.draft_heads)
            print(f"sweep, {v.label} decoder, on {len(dev[: args.sweep_prompts])} dev prompts (position cost "
                  f"{args.position_cost}): cost per token relative to full depth, cheapest first")
            for r in v.sweep:
                print(f"  E={r['draft_layer']:<3} d={r['draft_length']:<3} accept {r['acceptance_rate']:.3f}  "
                      f"tokens/step {r['tokens_per_step']:.2f}  relative cost {r['relative_cost']:.3f}")
            best = (v.sweep[0]["draft_layer"], v.sweep[0]["draft_length"])
            if best not in v.settings:
                v.settings.append(best)

    methods, owner = {}, {}  # name -> (exits, rule); name -> its variant
    for v in variants:
        full_depth = DecoderExits(v.adapter, [L], exit_head="shared", policy=False)  # no exit points on the way
        named = {f"{v.prefix}full": (full_depth, StaticExit(L))} | criterion_methods(v, criteria, base, cfg.rouge_target)
        methods |= named
        owner |= dict.fromkeys(named, v)

    rows = []
    for bs in args.batch_sizes:
        prompts = test[: args.prompts if bs > 1 else args.prompts_bs1]
        batches = [{"input_ids": ids, "attention_mask": padding} for ids, padding in prompt_batches(prompts, bs, pad)]
        # one untimed pass per method: its tokens, exit layers and FLOPs (greedy: every pass is the same)
        runs = {name: run_generation(ex, rule, prompts, bs, max_new_tokens, ends, pad, desc=f"{name} bs{bs}")
                for name, (ex, rule) in methods.items()}
        spec_runs = {f"{v.prefix}self-spec E={e} d={d}": (v, (e, d), run_speculative(v.adapter, v.draft_heads(e), prompts, bs,
                                                                                      (e, d), max_new_tokens, ends, pad))
                     for v in variants for e, d in v.settings}
        runners = {name: (lambda b, ex=ex, rule=rule: generate(ex, rule, b["input_ids"], b["attention_mask"],
                                                                max_new_tokens, ends, pad))
                   for name, (ex, rule) in methods.items()}
        for name, (v, setting, _) in spec_runs.items():
            runners[name] = speculative_runner(v.adapter, v.draft_heads(setting[0]), setting, max_new_tokens, ends, pad)
        runners["hf-generate"] = lambda b: lm.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                                       max_new_tokens=max_new_tokens, do_sample=False,
                                                       eos_token_id=ends, pad_token_id=pad)
        per_second = measure_throughput(batches, runners, repeats=args.repeats)  # prompts/s, interleaved, medians
        tokens = {name: run["tokens"] for name, run in runs.items()}
        tokens.update({name: run["tokens"] for name, (_, _, run) in spec_runs.items()})
        tokens["hf-generate"] = tokens["full"]  # the same greedy tokens as the full-depth loop (tested)
        throughput = {name: per_second[name] * tokens[name] / len(prompts) for name in runners}
        if args.prompts_file is not None:  # the reference: this run's original full-depth responses
            references = [tokenizer.decode(strip_end(s, ends)) for s in runs["full"]["sequences"]]
        else:
            references = [r["response"] for r in prompts]

        def timing(name: str, v: Variant) -> dict:
            """Quality against the original's responses; speed-up against full depth of the same weights
            and against the original's full depth."""
            return {"model": v.label, "batch_size": bs, "prompts": len(prompts), "throughput": throughput[name],
                    "wallclock_speedup": throughput[name] / throughput[f"{v.prefix}full"],
                    "wallclock_speedup_vs_original": throughput[name] / throughput["full"]}

        for name in methods:
            run, v = runs[name], owner[name]
            texts = [tokenizer.decode(strip_end(s, ends)) for s in run["sequences"]]
            layers = run["exit_layers"].float()
            rows.append({"method": name, **timing(name, v), "quality": sum(rouge_l(texts, references)) / len(prompts),
                         "layer_speedup": L / layers.mean().item() if layers.numel() else 1.0,
                         "flops_speedup": run["full_flops"] / max(1, run["decode_flops"])})
        for name, (v, (layer, length), run) in spec_runs.items():
            texts = [tokenizer.decode(strip_end(s, ends)) for s in run["sequences"]]
            rows.append({"method": name, **timing(name, v), "quality": sum(rouge_l(texts, references)) / len(prompts),
                         "layer_speedup": L / run["layer_passes_per_token"],
                         "flops_speedup": L / run["token_layers_per_token"],
                         "identical": run["sequences"] == runs[f"{v.prefix}full"]["sequences"],
                         "acceptance_rate": run["acceptance_rate"], "tokens_per_step": run["tokens_per_step"],
                         "draft_layer": layer, "draft_length": length, "draft_head": spec_cfg.draft_head,
                         "draft_vocab": spec_cfg.draft_vocab})
        rows.append({"method": "hf-generate (full depth)", **timing("hf-generate", original), "quality": None,
                     "layer_speedup": 1.0, "flops_speedup": None})
    print(machine())
    print_table(rows)
    if args.out:
        atomic_write_json(args.out, {"machine": machine(), "torch_threads": torch.get_num_threads(), "decoder": cfg.decoder,
                                     "max_new_tokens": max_new_tokens, "repeats": args.repeats,
                                     "command": "python benchmarks/bench_generation.py " + " ".join(argv or sys.argv[1:]),
                                     "position_cost": args.position_cost,
                                     "sweep": {v.label: v.sweep for v in variants} if args.sweep else None,
                                     "reports": {v.label: v.reports for v in variants if v.reports}, "rows": rows})
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
