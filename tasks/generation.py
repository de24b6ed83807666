"""Steps of ``exitflow generate``: prompts -> full-depth responses -> exits -> evaluation -> report.

Files (under ``artifacts/generate/seed-<seed>/``)::

    prompts/{train,dev,test}.jsonl     {"prompt", "source"} per line
    responses/{train,dev,test}.jsonl   + "prompt_ids", "response_ids", "response" (full depth, greedy)
    exits/init/, exits/consistentee/   exits.safetensors + exits.json (points, exit_head, decoder)
    evaluate/<criterion>/curve.json    one row per (split, threshold); examples.json
    report/                            report.md, curves.png, summary.json, examples.md
                                       (written by ``tasks.reports.generation``)

The responses are the decoder's own greedy full-depth responses (self-distillation): they are
the training targets and the quality reference (ROUGE-L of an accelerated response against the
full-depth one for the same prompt).
"""

from __future__ import annotations

import json
import math
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from prefect import task
from rouge_score import rouge_scorer
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from models.adapters.decoder import DecoderAdapter
from models.generation import (
    DecoderExits,
    GenerationError,
    StaticExit,
    collect_exit_states,
    exit_points,
    full_depth_decode_flops,
    generate,
    token_criterion,
)
from models.generation_training import InitTraining, PolicyTraining, point_report, train_init_exits, train_policy_rounds
from tasks.backbones import load_decoder
from tasks.caching import ARTIFACT_CACHE
from models.errors import CheckpointError, MissingCheckpointError
from tasks.checkpoint_files import read_json, read_safetensors
from config.params import DecoderExitsConfig, DecodingConfig, GeneratePolicyConfig, GenerateTrainConfig
from tasks.io import atomic_write_bytes, atomic_write_json, atomic_write_text, write_result
from tasks.metric_logger import MetricLogger, NullLogger
from tasks.metric_schema import speedup_step
from tasks.train import seed_everything

SPLITS = ("train", "dev", "test")
ADAPTATION_FILE = "adaptation.json"  # in an adapted-weights folder: the decoder it adapts and how
EXIT_SETS = {"policy": "consistentee"}  # criterion -> exits it reads; every other criterion reads "init"

# ---------------------------------------------------------------------------- decoding text
def chat_text(tokenizer, prompt: str) -> str:
    """The prompt as the model expects it: its chat template with the generation prompt, or the
    plain text (with a warning) when the tokenizer has no chat template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return prompt


def load_generation_decoder(decoder: str, adapted_dir: Path | None = None):
    """``(causal LM, tokenizer)``: the named decoder (``load_decoder``), or its adapted weights
    from ``tasks.generation_distill.adapt_backbone``'s folder (LoRA merged into the weights, or
    the whole fine-tuned model), in eval mode and frozen.

    Raises:
        CheckpointError: the folder adapts another decoder, or its weights do not fit this one
            (both names in the message).
    """
    if adapted_dir is None:
        return load_decoder(decoder)
    meta_path = Path(adapted_dir) / ADAPTATION_FILE
    if not meta_path.is_file():
        raise MissingCheckpointError(f"{meta_path} not found: {adapted_dir} holds no adapted weights; re-run exitflow generate")
    meta = read_json(meta_path)
    if meta.get("decoder") != decoder:
        raise CheckpointError(f"{adapted_dir}: the adapted weights are of decoder {meta.get('decoder')!r}, not of "
                              f"generate.decoder {decoder!r}; use the decoder they were trained on or re-run the adaptation")
    weights = Path(adapted_dir) / meta["weights"]
    lm, tokenizer = load_decoder(decoder)
    try:
        if meta["adapt"] == "lora":
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, str(weights)).merge_and_unload()
        else:
            from transformers import AutoModelForCausalLM

            adapted = AutoModelForCausalLM.from_pretrained(str(weights), dtype=torch.float32)
            mine, theirs = lm.state_dict(), adapted.state_dict()
            mismatch = sorted(set(mine) ^ set(theirs)) or [k for k, v in mine.items() if theirs[k].shape != v.shape]
            if mismatch or type(adapted) is not type(lm):
                raise ValueError(f"parameters {mismatch[:3]} differ (names or shapes)" if mismatch
                                 else f"a {type(adapted).__name__}, not a {type(lm).__name__}")
            lm = adapted
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{weights}: the adapted weights ({meta['adapt']}) do not fit generate.decoder {decoder!r}: "
                              f"{' '.join(str(err).split())[:300]}") from None
    lm.eval().requires_grad_(False)
    return lm, tokenizer


def warn_without_chat_template(tokenizer, name: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn(f"generate.decoder {name!r}: the tokenizer has no chat template; prompts are fed as plain text",
                      stacklevel=2)


def end_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def prompt_batches(rows: list[dict], batch_size: int, pad_id: int):
    """Left-padded ``(input_ids, padding)`` batches of ``row["prompt_ids"]`` in file order."""
    for start in range(0, len(rows), batch_size):
        chunk = [r["prompt_ids"] for r in rows[start:start + batch_size]]
        width = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        padding = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, c in enumerate(chunk):
            ids[i, width - len(c):] = torch.tensor(c)
            padding[i, width - len(c):] = 1
        yield ids, padding


def strip_end(ids: list[int], ends: list[int]) -> list[int]:
    """Tokens up to (without) the first end token."""
    for i, t in enumerate(ids):
        if t in ends:
            return ids[:i]
    return ids


def run_generation(exits: DecoderExits, criterion, rows: list[dict], batch_size: int, max_new_tokens: int,
                   ends: list[int], pad_id: int, desc: str | None = None) -> dict:
    """Generate for every row; ``{"sequences", "exit_layers" (decode steps), "decode_flops",
    "full_flops" (same steps at full depth), "tokens"}``. No wall-clock: outputs stay
    reproducible (``benchmarks/bench_generation.py`` times generation)."""
    sequences, layers, flops, full, tokens = [], [], 0, 0, 0
    n_batches = math.ceil(len(rows) / batch_size)
    for ids, padding in tqdm(prompt_batches(rows, batch_size, pad_id), total=n_batches, disable=None, leave=False, desc=desc):
        out = generate(exits, criterion, ids, padding, max_new_tokens, ends, pad_id)
        sequences += out.sequences()
        layers.append(out.decode_exit_layers())
        flops += int(out.decode_flops.sum())
        full += int(full_depth_decode_flops(exits.adapter, padding.sum(-1), out.decode_tokens).sum())
        tokens += int(out.lengths.sum())
    return {"sequences": sequences, "exit_layers": torch.cat(layers), "decode_flops": flops, "full_flops": full,
            "tokens": tokens}


@task(name="full_depth_responses", cache_policy=ARTIFACT_CACHE, persist_result=True)
def full_depth_responses(decoding: DecodingConfig, prompts_dir: Path, out_dir: Path) -> dict:
    """Greedy full-depth responses per split (the exit loop with every token at layer L, which
    equals ``generate()`` token for token: tests/models/test_generation.py)."""
    lm, tokenizer = load_decoder(decoding.decoder)
    warn_without_chat_template(tokenizer, decoding.decoder)
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, [adapter.num_layers], exit_head="shared", policy=False)
    ends = end_ids(tokenizer)
    out = {}
    for split in SPLITS:
        rows = read_jsonl(Path(prompts_dir) / f"{split}.jsonl")
        for r in rows:
            r["prompt_ids"] = tokenizer(chat_text(tokenizer, r["prompt"]), add_special_tokens=False)["input_ids"]
        run = run_generation(exits, StaticExit(adapter.num_layers), rows, decoding.batch_size, decoding.max_new_tokens, ends,
                             tokenizer.pad_token_id, desc=f"full-depth responses ({split})")
        for r, seq in zip(rows, run["sequences"]):
            r["response_ids"] = seq
            r["response"] = tokenizer.decode(strip_end(seq, ends))
        path = atomic_write_text(Path(out_dir) / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        out[split] = path
    return write_result(out_dir, out)


# ---------------------------------------------------------------------------- training
def training_tokens(exits: DecoderExits, rows: list[dict], batch_size: int):
    """States at every exit point for the response tokens of ``rows`` that decode steps produce
    (all but the first, which comes from the full-depth prefill and never exits):
    ``([P, n, d], [n])``. Token r_k is predicted at the position before it; right padding."""
    states, targets = [], []
    for start in tqdm(range(0, len(rows), batch_size), disable=None, leave=False, desc="exit states"):
        chunk = rows[start:start + batch_size]
        seqs = [r["prompt_ids"] + r["response_ids"] for r in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        padding = torch.zeros_like(ids)
        predicts = torch.zeros_like(ids)
        for i, (r, s) in enumerate(zip(chunk, seqs)):
            ids[i, : len(s)] = torch.tensor(s)
            padding[i, : len(s)] = 1
            predicts[i, len(r["prompt_ids"]): len(s) - 1] = 1
            targets.append(torch.tensor(r["response_ids"][1:]))
        states.append(collect_exit_states(exits, ids, padding, predicts))
    return torch.cat(states, 1), torch.cat(targets)


def save_exits(exits: DecoderExits, folder: Path, meta: dict) -> Path:
    atomic_write_bytes(folder / "exits.safetensors",
                       save_safetensors({k: v.detach().contiguous() for k, v in exits.state_dict().items()}))
    atomic_write_json(folder / "exits.json", {"points": exits.points, "exit_head": exits.exit_head,
                                              "policy": exits.policy is not None, **meta})
    return folder


def load_exits(folder: Path, adapter: DecoderAdapter) -> DecoderExits:
    """Exits saved by ``save_exits`` on ``adapter``'s decoder (points checked against its depth)."""
    meta = read_json(Path(folder) / "exits.json")
    bad = [p for p in meta["points"] if not 1 <= p <= adapter.num_layers]
    if bad or meta["points"][-1] != adapter.num_layers:
        raise GenerationError(f"{folder}/exits.json: exit points {meta['points']} do not fit a {adapter.num_layers}-layer decoder")
    exits = DecoderExits(adapter, meta["points"], exit_head=meta["exit_head"], policy=meta["policy"])
    exits.load_state_dict(read_safetensors(Path(folder) / "exits.safetensors"))
    return exits.eval()


def exit_training_setup(decoding: DecodingConfig, exit_config: DecoderExitsConfig, seed: int,
                        adapted_dir: Path | None = None, loaded: tuple | None = None):
    """What every exit-training step starts with: seeds set, denormals flushed (the backward pass of
    CE over a 49k vocabulary meets many denormal softmax probabilities; without flushing them the
    LM head's input gradient is ~40x slower on CPU), the decoder (adapted when ``adapted_dir``, or
    ``loaded`` = ``(lm, tokenizer)`` already loaded) wrapped in its adapter, and the exit points.
    Returns ``(lm, tokenizer, adapter, points)``."""
    seed_everything(seed)
    torch.set_flush_denormal(True)
    lm, tokenizer = loaded or load_generation_decoder(decoding.decoder, adapted_dir)
    adapter = DecoderAdapter(lm)
    return lm, tokenizer, adapter, exit_points(exit_config.layers, adapter.num_layers)


@task(name="train_generation_exits", cache_policy=ARTIFACT_CACHE, persist_result=True)
def train_exits(decoding: DecodingConfig, exit_config: DecoderExitsConfig, init: GenerateTrainConfig,
                policy: GeneratePolicyConfig, responses_dir: Path, out_dir: Path, seed: int = 42,
                logger: MetricLogger | None = None, init_exits_dir: Path | None = None,
                adapted_dir: Path | None = None) -> dict:
    """Init (weighted loss over exit points, exit heads only) -> ``init/``; then ConsistentEE
    rounds from the init exits: per round the per-point CE (and memorized layer), policy epochs
    (REINFORCE, decaying epsilon), one epoch of the exit heads at the sampled exits (Eq. 6) ->
    ``consistentee/``. The backbone and LM head never change.

    The last ``policy.held_out`` share of the train prompts is held out from the exits: the
    policy learns from the losses the exits make on text they were not fitted to (on their own
    training tokens an exit's loss is optimistic, and a policy trained on it exits too early).

    ``init_exits_dir``: exits distilled towards the full model (``tasks.generation_distill``) take
    the place of the init epochs; ``adapted_dir``: the adapted decoder the exits sit on."""
    logger = logger or NullLogger()
    lm, tokenizer, adapter, points = exit_training_setup(decoding, exit_config, seed, adapted_dir)
    if init_exits_dir is None:
        exits = DecoderExits(adapter, points, exit_head=exit_config.head, policy=True)
    else:
        exits = load_exits(init_exits_dir, adapter).train()
        if exits.points != points or exits.exit_head != exit_config.head or exits.policy is None:
            raise CheckpointError(f"{init_exits_dir}: distilled exits at {exits.points} ({exits.exit_head}) do not match "
                                  f"generate.exit_layers / exit_head {points} ({exit_config.head}); re-run exitflow generate")
    rows = read_jsonl(Path(responses_dir) / "train.jsonl")
    held = int(round(len(rows) * policy.held_out))
    if held and held == len(rows):
        raise GenerationError(f"generate.policy.held_out {policy.held_out} leaves no train prompts for the exits")
    states, targets = training_tokens(exits, rows[: len(rows) - held], decoding.batch_size)
    p_states, p_targets = training_tokens(exits, rows[len(rows) - held:], decoding.batch_size) if held else (states, targets)
    token_sets = {"fit": (states, targets), "held_out": (p_states, p_targets)}
    generator = torch.Generator().manual_seed(seed)
    history = {"points": points, "tokens": int(targets.numel()), "policy_tokens": int(p_targets.numel()),
               "init": [], "rounds": []}
    meta = {"decoder": decoding.decoder, "num_layers": adapter.num_layers} | ({"adapted": True} if adapted_dir else {})

    cfg = policy
    history.update(point_report(exits, token_sets, "init_before"))
    if init_exits_dir is None:
        history["init"] = train_init_exits(exits, states, targets, InitTraining(init.epochs, init.lr, init.weight_decay,
                                                                                init.batch_tokens),
                                           generator, init_progress, partial(report_init_epoch, logger))
    else:
        history["init_from"] = "distilled"
    history.update(point_report(exits, token_sets, "init_after"))
    init_dir = save_exits(exits, Path(out_dir) / "init", meta | {"stage": "init"})

    policy_training = PolicyTraining(rounds=cfg.rounds, policy_epochs=cfg.policy_epochs, batch_tokens=cfg.batch_tokens,
                            policy_lr=cfg.policy_lr, exit_lr=cfg.exit_lr, weight_decay=init.weight_decay,
                            exit_batch_tokens=init.batch_tokens, reward=cfg.reward, copies=cfg.copies, alpha=cfg.alpha,
                            epsilon_start=cfg.epsilon_start, epsilon_end=cfg.epsilon_end)
    history["rounds"] = train_policy_rounds(exits, states, targets, p_states, p_targets, policy_training, generator, policy_progress,
                                            partial(report_policy_round, logger))
    cee_dir = save_exits(exits, Path(out_dir) / "consistentee", meta | {"stage": "consistentee", "reward": cfg.reward,
                                                                          "alpha": cfg.alpha})
    atomic_write_json(Path(out_dir) / "history.json", history)
    return write_result(out_dir, {"init": init_dir, "consistentee": cee_dir, "history": Path(out_dir) / "history.json",
                                  "tokens": int(targets.numel())})


def init_progress(batches, epoch: int):
    return tqdm(batches, disable=None, leave=False, desc=f"init exits epoch {epoch}")


def policy_progress(batches, round_index: int):
    return tqdm(batches, disable=None, leave=False, desc=f"policy round {round_index}")


def report_init_epoch(logger: MetricLogger, record: dict) -> None:
    logger.log_metrics({"init_weighted_loss": record["weighted_loss"]}, step=record["epoch"])
    tqdm.write(f"[generate] init epoch {record['epoch']}: weighted loss {record['weighted_loss']:.3f}")


def report_policy_round(logger: MetricLogger, record: dict) -> None:
    logger.log_metrics({"policy_reward": record["reward"], "policy_exit_loss": record["exit_loss"]}, step=record["round"])
    tqdm.write(f"[generate] round {record['round']}: reward {record['reward']:.3f}, exit loss (Eq. 6) {record['exit_loss']:.3f}, "
               f"mean pi per point {[round(x, 3) for x in record['mean_pi']]}")


# ---------------------------------------------------------------------------- evaluation
def rouge_l(candidates: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F-measure (``rouge-score``, stemming on) of each candidate against its reference."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, cand)["rougeL"].fmeasure if (ref.strip() or cand.strip()) else 1.0
            for cand, ref in zip(candidates, references)]


@task(name="evaluate_generation", cache_policy=ARTIFACT_CACHE, persist_result=True)
def evaluate_criterion(decoding: DecodingConfig, criterion: str, thresholds: list[float], example_count: int,
                       responses_dir: Path, exits_dir: Path, out_dir: Path, logger: MetricLogger | None = None,
                       adapted_dir: Path | None = None) -> dict:
    """Generate dev and test prompts at every threshold of ``criterion``: ROUGE-L against the
    full-depth responses, average exit layer, layer and FLOPs speed-up (decode steps). Wall-clock
    comes from ``benchmarks/bench_generation.py``, side by side with full depth. With
    ``adapted_dir`` the criteria run on the adapted decoder (the references stay the original's)."""
    logger = logger or NullLogger()
    lm, tokenizer = load_generation_decoder(decoding.decoder, adapted_dir)
    adapter = DecoderAdapter(lm)
    exits = load_exits(exits_dir, adapter)
    ends = end_ids(tokenizer)
    rows_by_split = {split: read_jsonl(Path(responses_dir) / f"{split}.jsonl") for split in ("dev", "test")}
    curve, examples = [], []
    L = adapter.num_layers
    for threshold in thresholds:
        rule = token_criterion(criterion, threshold)
        for split, rows in rows_by_split.items():
            run = run_generation(exits, rule, rows, decoding.batch_size, decoding.max_new_tokens, ends,
                                 tokenizer.pad_token_id, desc=f"{rule} {split}")
            texts = [tokenizer.decode(strip_end(s, ends)) for s in run["sequences"]]
            scores = rouge_l(texts, [r["response"] for r in rows])
            avg = run["exit_layers"].float().mean().item() if run["exit_layers"].numel() else float(L)
            row = {"criterion": criterion, "threshold": threshold, "split": split, "rouge_l": float(np.mean(scores)),
                   "avg_exit_layer": avg, "layer_speedup": L / avg, "flops_speedup": run["full_flops"] / max(1, run["decode_flops"]),
                   "flops_per_token": run["decode_flops"] / max(1, run["exit_layers"].numel()),
                   "tokens": run["tokens"]}
            curve.append(row)
            if split == "test":
                logger.log_metrics({"test_rouge_l": row["rouge_l"], "test_layer_speedup": row["layer_speedup"],
                                    "test_flops_speedup": row["flops_speedup"]}, step=speedup_step(row["layer_speedup"]))
                examples.append({"threshold": threshold, "responses": [
                    {"prompt": r["prompt"], "full_depth": r["response"], "accelerated": t, "rouge_l": s}
                    for r, t, s in zip(rows[: example_count], texts, scores)]})
            tqdm.write(f"[generate] {rule} {split}: ROUGE-L {row['rouge_l']:.3f} at {row['layer_speedup']:.2f}x layers, "
                       f"{row['flops_speedup']:.2f}x FLOPs")
    atomic_write_json(Path(out_dir) / "curve.json", curve)
    atomic_write_json(Path(out_dir) / "examples.json", examples)
    return write_result(out_dir, {"curve": Path(out_dir) / "curve.json", "examples": Path(out_dir) / "examples.json",
                                  "exits": Path(exits_dir)})
