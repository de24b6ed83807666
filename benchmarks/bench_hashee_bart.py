"""Benchmark: HashEE on a BART-base-shaped encoder (frequency hash) vs the full encoder.

What is measured: encoder throughput (samples/s) of ``HashEEEncoder`` (token-level exits,
prefix path) against the model's own HF encoder (all tokens, all layers), timed in one
process, interleaved per repeat, medians over repeats, at batch sizes 1 and 32, on real
text: SST-2 sentences (ELUE ``sst2``; the hash is built from the train split, timing runs on
``--split``, dev by default). The decoder is untouched by HashEE and is not timed. Also
reported: layer speed-up (L / mean token exit layer) and analytic FLOPs speed-up
(``hashee_encoder_flops``), over every row of the split.

Weights: no BART weights ship offline, so by default the model is BART-base-shaped (6 encoder
and 6 decoder layers, d_model 768, 12 heads, FFN 3072, vocabulary 50265) with random weights
drawn with ``--seed``. Speed does not depend on the weights: the work per layer is fixed by
the shapes and by which tokens run, and the hash (hence which tokens run) comes from token
frequencies, not from the model. Quality is therefore not measured on random weights.

Tokens: without ``--checkpoint`` the text is tokenized with the project's offline backbone
tokenizer (MiniLM's WordPiece, ``tasks/backbones.py``; 30522 ids, all valid BART ids below
50265), standing in for BART's BPE: sentence lengths and token-frequency skew, which set the
speed, are alike. ``--checkpoint DIR`` loads a user-supplied pretrained BART
(``from_pretrained``, local files only) with its own tokenizer; then quality is measured too:
teacher-forced reconstruction of the input sentence (BART's denoising objective without
noise), token accuracy in percent, for the full and the hash-exit encoder feeding the same
decoder. It is a proxy, not the paper's summarization ROUGE (no summarization data offline).

    python benchmarks/bench_hashee_bart.py --out benchmarks/results/hashee_bart.json
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
from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration  # noqa: E402
from transformers.models.bart.modeling_bart import shift_tokens_right  # noqa: E402

from bench_early_exit import machine  # noqa: E402
from models.hashee import HashEEEncoder, build_frequency_hash, hashee_encoder_flops  # noqa: E402
from models.timing import measure_throughput  # noqa: E402
from tasks.backbones import resolve_backbone  # noqa: E402
from tasks.data import BUILTIN_TASKS, read_split  # noqa: E402
from tasks.features import batches  # noqa: E402
from tasks.io import atomic_write_json  # noqa: E402

BART_BASE = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)


def load_model(checkpoint: Path | None, seed: int):
    """``(BartForConditionalGeneration, tokenizer, weights description)``."""
    if checkpoint is not None:
        model = BartForConditionalGeneration.from_pretrained(checkpoint, local_files_only=True, attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        return model.eval(), tokenizer, f"pretrained checkpoint {checkpoint}"
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("minilm-l6"))
    torch.manual_seed(seed)
    config = BartConfig(**BART_BASE, pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa")
    return BartForConditionalGeneration(config).eval(), tokenizer, f"random (seed {seed}), BART-base shape"


def encode(tokenizer, sentences: list[str], max_length: int) -> dict[str, list]:
    ids = tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]
    return {"input_ids": ids, "labels": [0] * len(ids)}


@torch.no_grad()
def reconstruction_accuracy(model, encoder_fn, batch_list, pad_id: int) -> float:
    """Teacher-forced token accuracy (%) of the decoder reproducing each input from ``encoder_fn``'s states."""
    correct = total = 0
    for b in batch_list:
        ids, mask = b["input_ids"], b["attention_mask"]
        decoder_ids = shift_tokens_right(ids, pad_id, model.config.decoder_start_token_id)
        logits = model(attention_mask=mask, decoder_input_ids=decoder_ids, encoder_outputs=encoder_fn(ids, mask)).logits
        real = mask.bool()
        correct += int((logits.argmax(-1)[real] == ids[real]).sum())
        total += int(real.sum())
    return 100.0 * correct / total


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "elue", help="ELUE folder (sst2/*.tsv)")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a local pretrained BART directory (from_pretrained)")
    ap.add_argument("--buckets", type=int, default=6)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--rows-bs1", type=int, default=200, help="rows timed at batch size 1")
    ap.add_argument("--rows", type=int, default=320, help="rows timed at larger batch sizes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.checkpoint is not None and not (args.checkpoint / "config.json").exists():
        ap.error(f"--checkpoint {args.checkpoint}: expected a from_pretrained directory with config.json")

    model, tokenizer, weights = load_model(args.checkpoint, args.seed)
    spec = BUILTIN_TASKS["sst2"]
    train = read_split(args.data / spec.files["train"], spec, "train")["text_a"]
    timed = read_split(args.data / spec.files[args.split], spec, args.split)["text_a"]
    special = tokenizer.all_special_ids
    table = build_frequency_hash(encode(tokenizer, train, args.max_length)["input_ids"], model.config.vocab_size,
                                 model.config.encoder_layers, args.buckets, special)
    hashee = HashEEEncoder(model, table).eval()
    full = model.get_encoder()
    enc = encode(tokenizer, timed, args.max_length)
    pad = tokenizer.pad_token_id

    exits = [table[torch.tensor(ids)].tolist() for ids in enc["input_ids"]]
    num_layers = model.config.encoder_layers
    full_flops = sum(hashee_encoder_flops(hashee.adapter, [num_layers] * len(e)) for e in exits)
    hash_flops = sum(hashee_encoder_flops(hashee.adapter, e) for e in exits)
    mean_exit = sum(map(sum, exits)) / sum(map(len, exits))
    method = "hashee-frequency"
    points = {"full": {"layer_speedup": 1.0, "flops_speedup": 1.0},
              method: {"layer_speedup": num_layers / mean_exit, "flops_speedup": full_flops / hash_flops}}
    encoders = {"full": lambda ids, mask: full(input_ids=ids, attention_mask=mask), method: hashee}
    quality = {name: None for name in encoders}
    if args.checkpoint is not None:
        sub = {k: v[: args.rows] for k, v in enc.items()}
        for name, fn in encoders.items():
            quality[name] = reconstruction_accuracy(model, fn, list(batches(sub, 32, pad)), pad)
    runners = {name: (lambda fn: lambda b: fn(b["input_ids"], b["attention_mask"]))(fn) for name, fn in encoders.items()}

    rows = []
    for bs in args.batch_sizes:
        n = min(args.rows_bs1 if bs == 1 else args.rows, len(enc["labels"]))
        sub = {k: v[:n] for k, v in enc.items()}
        tp = measure_throughput(list(batches(sub, bs, pad)), runners, repeats=args.repeats)
        for name in runners:
            rows.append({"method": name, "batch_size": bs, "timed_rows": n, "threshold": None, "quality": quality[name],
                         "throughput": tp[name], "wallclock_speedup": tp[name] / tp["full"], **points[name]})
    shape = "bart-base shape" if args.checkpoint is None else f"bart checkpoint {args.checkpoint.name}"
    result = {"backbone": f"{shape} (encoder timed; decoder untouched, not timed)", "weights": weights,
              "tokenizer": "checkpoint's own" if args.checkpoint else "minilm-l6 WordPiece (ids < 30522, valid BART ids)",
              "task": "sst2", "split": args.split, "hash": f"frequency, B={args.buckets}, built on train",
              "machine": machine(), "repeats": args.repeats, "mean_token_exit_layer": mean_exit,
              "quality_metric": "teacher-forced input reconstruction token accuracy (%)" if args.checkpoint else
              "not measured: random weights (speed does not depend on the weights)", "rows": rows}
    print(f"{result['backbone']}; weights {weights}; {result['machine']}")
    print(f"{'method':<18}{'bs':>5}{'samples/s':>11}{'wall x':>8}{'layer x':>9}{'FLOPs x':>9}{'quality':>9}")
    for r in rows:
        q = "-" if r["quality"] is None else f"{r['quality']:.2f}"
        print(f"{r['method']:<18}{r['batch_size']:>5}{r['throughput']:>11.1f}{r['wallclock_speedup']:>8.2f}"
              f"{r['layer_speedup']:>9.2f}{r['flops_speedup']:>9.2f}{q:>9}")
    if args.out is not None:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
