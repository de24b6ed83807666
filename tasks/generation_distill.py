"""Steps of ``exitflow generate`` for issue 22: distillation data -> backbone adaptation -> exit distillation.

Files (under ``artifacts/generate/seed-<seed>/``)::

    distill-data/{train,held_out}.safetensors  ids [N], lengths [S], top_ids [N, k], top_logprobs [N, k]
    distill-data/meta.json                     tokens per source, k, the decoder
    adapt/adaptation.json                      {"decoder", "adapt", settings}: what the weights adapt
    adapt/lora/ or adapt/model/                peft ``save_pretrained`` adapters, or the whole model
    adapt/exits/, adapt/report.json            jointly trained exits; the cost to the full-depth model
    distill/exits/, distill/report.json        exits distilled on the (adapted) backbone; agreement before/after

The teacher is the original full model (``generate.decoder``) in every case; the tensor code is
``models/distillation.py`` and ``models/adaptation.py``.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
from prefect import task
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from config.params import DecoderExitsConfig, DecodingConfig, GenerateAdaptationConfig, GenerateDistillConfig
from models.adapters.decoder import DecoderAdapter
from models.adaptation import (
    AdaptTraining,
    DistillSet,
    add_lora,
    check_adaptation,
    evaluate_exits,
    run_layers,
    train_exits_and_backbone,
)
from models.distillation import TeacherTargets, top_k_targets
from models.generation import DecoderExits, GenerationError, StaticExit
from tasks.backbones import load_decoder
from tasks.caching import ARTIFACT_CACHE
from tasks.checkpoint_files import read_safetensors
from tasks.difficulty import read_conll
from tasks.generation import (
    ADAPTATION_FILE,
    end_ids,
    exit_training_setup,
    read_jsonl,
    rouge_l,
    run_generation,
    save_exits,
    strip_end,
)
from tasks.io import atomic_dir, atomic_write_bytes, atomic_write_json, write_result
from tasks.metric_logger import MetricLogger, NullLogger
from tasks.prompts import _source_texts, detokenize

SETS = ("train", "held_out")


# ---------------------------------------------------------------------------- data
def response_sequences(rows: list[dict], ends: list[int], max_length: int) -> list[list[int]]:
    """Prompt + the model's own response (up to and with its first end token), cut at ``max_length``."""
    out = []
    for r in rows:
        response = strip_end(r["response_ids"], ends)
        tail = r["response_ids"][len(response):len(response) + 1]  # the end token, when there is one
        out.append((r["prompt_ids"] + response + tail)[:max_length])
    return out


def packed_sentences(sentences: list[str], tokenizer, max_length: int, budget: int) -> list[list[int]]:
    """Sentences (one per line) packed into sequences of at most ``max_length`` tokens, until
    ``budget`` tokens; a sentence longer than ``max_length`` is cut."""
    out, current, total = [], [], 0
    for text in sentences:
        if total >= budget:
            break
        ids = tokenizer(text + "\n", add_special_tokens=False)["input_ids"][:max_length]
        if current and len(current) + len(ids) > max_length:
            out.append(current)
            current = []
        current = current + ids
        total += len(ids)
    if current:
        out.append(current)
    return out


def source_sentences(distill: GenerateDistillConfig, data_dir: Path, conll_dir: Path | None, rng: random.Random) -> dict[str, list[str]]:
    """Shuffled train sentences per source: each prepared task's first column, CoNLL-2003 train."""
    out = {}
    for source in distill.sources:
        texts = list(_source_texts(Path(data_dir), source).get("train", []))
        rng.shuffle(texts)
        out[source] = texts
    if conll_dir is not None:
        texts = [detokenize(" ".join(s["words"])) for s in read_conll(Path(conll_dir) / "train.txt")]
        rng.shuffle(texts)
        out["conll"] = texts
    return out


@torch.no_grad()
def teacher_targets(adapter: DecoderAdapter, sequences: list[list[int]], k: int, batch_sequences: int) -> DistillSet:
    """The full model (final norm + LM head at layer L) over every position of ``sequences``: top ``k``."""
    exits = DecoderExits(adapter, [adapter.num_layers], exit_head="shared", policy=False)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    ids = torch.tensor([t for s in sequences for t in s], dtype=torch.long)
    data = DistillSet(ids, lengths)
    top_ids, top_logprobs = [], []
    total = -(-len(sequences) // batch_sequences)
    for batch_ids, padding, _, _ in tqdm(data.batches(batch_sequences), total=total, disable=None, leave=False, desc="teacher"):
        states = run_layers(adapter, batch_ids, padding, [adapter.num_layers])
        top = top_k_targets(exits.logits(0, states[adapter.num_layers][padding.bool()]), k)
        top_ids.append(top.top_ids)
        top_logprobs.append(top.top_logprobs)
    return DistillSet(ids, lengths, TeacherTargets(torch.cat(top_ids), torch.cat(top_logprobs)))


def save_distill_set(path: Path, data: DistillSet) -> Path:
    return atomic_write_bytes(path, save_safetensors({
        "ids": data.ids.int().contiguous(), "lengths": data.lengths.int().contiguous(),
        "top_ids": data.teacher.top_ids.int().contiguous(), "top_logprobs": data.teacher.top_logprobs.half().contiguous()}))


def load_distill_set(path: Path) -> DistillSet:
    t = read_safetensors(path)
    return DistillSet(t["ids"].long(), t["lengths"].long(), TeacherTargets(t["top_ids"].long(), t["top_logprobs"].float()))


@task(name="generation_distillation_data", cache_policy=ARTIFACT_CACHE, persist_result=True)
def build_distillation_data(decoding: DecodingConfig, distill: GenerateDistillConfig, responses_dir: Path, data_dir: Path,
                            conll_dir: Path | None, out_dir: Path, seed: int = 42, policy_held_out: float = 0.0) -> dict:
    """Teacher-forced text (the train prompts' responses, packed sentences of every source, taken
    round-robin until ``held_out_tokens + tokens``), shuffled; the held-out share first; the
    original full model's top-k distribution at every position. The last ``policy_held_out``
    share of the train prompts is left out: the ConsistentEE policy learns on them, from the
    losses of exits that never saw them (``tasks.generation.train_exits``)."""
    if distill.tokens < 1:
        raise GenerationError("generate.distill.tokens is 0: there is no distillation set to build")
    lm, tokenizer = load_decoder(decoding.decoder)
    adapter = DecoderAdapter(lm)
    rng = random.Random(seed)
    budget = distill.tokens + distill.held_out_tokens
    rows = read_jsonl(Path(responses_dir) / "train.jsonl")
    rows = rows[: len(rows) - int(round(len(rows) * policy_held_out))]
    pools = {"responses": response_sequences(rows, end_ids(tokenizer), distill.max_length)}
    share = budget // (1 + len(distill.sources) + (conll_dir is not None))
    for source, texts in source_sentences(distill, Path(data_dir), conll_dir, rng).items():
        pools[source] = packed_sentences(texts, tokenizer, distill.max_length, 2 * budget)
    picked, counts, total = [], {name: 0 for name in pools}, 0
    cursor = {name: 0 for name in pools}
    while total < budget and any(cursor[n] < len(p) for n, p in pools.items()):
        for name, pool in pools.items():  # round-robin: each source lends about ``share`` tokens first
            if cursor[name] < len(pool) and (counts[name] < share or all(cursor[m] >= len(q) or counts[m] >= share
                                                                          for m, q in pools.items())):
                seq = pool[cursor[name]]
                cursor[name] += 1
                picked.append(seq)
                counts[name] += len(seq)
                total += len(seq)
    rng.shuffle(picked)
    held, held_tokens = [], 0
    while picked and held_tokens < distill.held_out_tokens:
        held.append(picked.pop())
        held_tokens += len(held[-1])
    if not picked:
        raise GenerationError(f"generate.distill: the sources hold only {total} tokens, all needed for held_out_tokens "
                              f"{distill.held_out_tokens}; add sources or lower it")
    if total - held_tokens < distill.tokens:
        warnings.warn(f"generate.distill.tokens: the sources {['responses', *pools][1:]} hold only {total - held_tokens} "
                      f"training tokens of the {distill.tokens} asked for; distilling on those", stacklevel=2)
    out = {}
    for name, seqs in (("held_out", held), ("train", picked)):
        out[name] = save_distill_set(Path(out_dir) / f"{name}.safetensors",
                                     teacher_targets(adapter, seqs, distill.top_k, distill.batch_sequences))
    meta = {"decoder": decoding.decoder, "top_k": distill.top_k, "tokens_by_source": counts,
            "train_tokens": total - held_tokens, "held_out_tokens": held_tokens}
    atomic_write_json(Path(out_dir) / "meta.json", meta)
    return write_result(out_dir, out | {"meta": Path(out_dir) / "meta.json"})


# ---------------------------------------------------------------------------- adaptation
def check_adaptation_inputs(decoder: str, adapt: str, adaptation: GenerateAdaptationConfig) -> None:
    """``check_adaptation`` on the named decoder (loaded only for ``lora``, whose targets it checks)."""
    if adapt == "lora":
        check_adaptation(adapt, adaptation.tokens, load_decoder(decoder)[0], adaptation.lora_targets)
    elif adapt != "none":
        check_adaptation(adapt, adaptation.tokens, None, [])


def full_depth_rouge(lm, tokenizer, decoding: DecodingConfig, responses_dir: Path, split: str = "test") -> float:
    """Mean ROUGE-L of ``lm``'s greedy full-depth responses against the original model's on ``split``."""
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, [adapter.num_layers], exit_head="shared", policy=False)
    rows = read_jsonl(Path(responses_dir) / f"{split}.jsonl")
    ends = end_ids(tokenizer)
    run = run_generation(exits, StaticExit(adapter.num_layers), rows, decoding.batch_size, decoding.max_new_tokens, ends,
                         tokenizer.pad_token_id, desc=f"adapted full depth ({split})")
    texts = [tokenizer.decode(strip_end(s, ends)) for s in run["sequences"]]
    return float(np.mean(rouge_l(texts, [r["response"] for r in rows])))


def save_adapted_weights(lm, folder: Path) -> None:
    """``save_pretrained`` of a peft model (its adapters) or a whole fine-tuned model. A model read
    from a GGUF file carries transformers' GGUF "quantizer" though its weights were dequantised
    to float32 on loading, and ``save_pretrained`` refuses it: the marker is dropped first, so the
    folder holds a plain float32 checkpoint."""
    if getattr(lm, "hf_quantizer", None) is not None and getattr(lm, "peft_config", None) is None:
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.is_quantized = False
    lm.save_pretrained(folder)


def _step_logger(logger: MetricLogger, prefix: str, every: int = 20):
    def on_step(record: dict) -> None:
        if record["step"] % every == 0:
            logger.log_metrics({f"{prefix}_loss": record["loss"]}, step=record["step"])
            tqdm.write(f"[generate] {prefix} step {record['step']} ({record['tokens']} tokens): loss {record['loss']:.4f}")
    return on_step


@task(name="generation_adapt_backbone", cache_policy=ARTIFACT_CACHE, persist_result=True)
def adapt_backbone(decoding: DecodingConfig, exit_config: DecoderExitsConfig, adapt: str,
                   adaptation: GenerateAdaptationConfig, distill_dir: Path, responses_dir: Path, out_dir: Path,
                   seed: int = 42, logger: MetricLogger | None = None) -> dict:
    """LoRA or full fine-tuning of the decoder with layer dropout and the early-exit loss on the
    self-distilled targets (``models.adaptation``); saves the adapted weights (``save_pretrained``)
    and the jointly trained exits, and reports what the full-depth model paid: held-out agreement
    with the original, perplexity on held-out text (original and adapted), ROUGE-L of its test
    responses against the original's."""
    logger = logger or NullLogger()
    lm, tokenizer = load_decoder(decoding.decoder)
    check_adaptation(adapt, adaptation.tokens, lm, adaptation.lora_targets)
    lm, tokenizer, adapter, points = exit_training_setup(decoding, exit_config, seed, loaded=(lm, tokenizer))
    train, held = load_distill_set(Path(distill_dir) / "train.safetensors"), load_distill_set(Path(distill_dir) / "held_out.safetensors")
    exits = DecoderExits(adapter, points, exit_head=exit_config.head, policy=False)
    before = evaluate_exits(exits, held, adaptation.batch_sequences)
    if adapt == "lora":
        trained_lm = add_lora(lm, adaptation.lora_rank, adaptation.lora_alpha, adaptation.lora_targets)
        lr = adaptation.lora_lr
    else:
        trained_lm, lr = lm.requires_grad_(True), adaptation.full_lr
    cfg = AdaptTraining(epochs=1, lr=lr, exit_lr=adaptation.exit_lr, weight_decay=adaptation.weight_decay,
                        batch_sequences=adaptation.batch_sequences, p_max=adaptation.p_max, exit_scale=adaptation.exit_scale,
                        curriculum=adaptation.curriculum, rotation=adaptation.rotation, train_backbone=True,
                        max_tokens=adaptation.tokens)
    history = train_exits_and_backbone(exits, train, cfg, torch.Generator().manual_seed(seed),
                                       lambda batches, epoch: tqdm(batches, disable=None, leave=False, desc=f"adapt epoch {epoch}"),
                                       _step_logger(logger, "adapt"))
    out_dir = Path(out_dir)
    weights_dir = out_dir / ("lora" if adapt == "lora" else "model")
    with atomic_dir(weights_dir) as tmp:
        save_adapted_weights(trained_lm, tmp)
    if adapt == "lora":
        lm = trained_lm.merge_and_unload()
    lm.eval().requires_grad_(False)
    adapter = DecoderAdapter(lm)
    exits.adapter = adapter
    after = evaluate_exits(exits, held, adaptation.batch_sequences)
    meta = {"decoder": decoding.decoder, "num_layers": adapter.num_layers}
    exits_dir = save_exits(exits, out_dir / "exits", meta | {"stage": f"adapt-{adapt}"})
    atomic_write_json(out_dir / ADAPTATION_FILE, {"decoder": decoding.decoder, "adapt": adapt,
                                                  "weights": weights_dir.name, **adaptation.model_dump(mode="json")})
    report = {"adapt": adapt, "steps": len(history), "tokens": history[-1]["tokens"] if history else 0,
              "held_out_tokens": held.tokens, "points": points,
              "full_depth_agreement_with_original": after["agreement"][-1],
              "perplexity_original": before["perplexity"], "perplexity_adapted": after["perplexity"],
              "rouge_l_full_depth_vs_original": full_depth_rouge(lm, tokenizer, decoding, responses_dir),
              "before": before, "after": after, "loss": [h["loss"] for h in history]}
    atomic_write_json(out_dir / "report.json", report)
    logger.log_metrics({"adapt_full_depth_agreement": report["full_depth_agreement_with_original"],
                        "adapt_perplexity": report["perplexity_adapted"],
                        "adapt_rouge_l_full_depth": report["rouge_l_full_depth_vs_original"]})
    tqdm.write(f"[generate] adapt {adapt}: full depth agrees with the original on {after['agreement'][-1]:.3f} of held-out "
               f"tokens, perplexity {before['perplexity']:.2f} -> {after['perplexity']:.2f}, ROUGE-L "
               f"{report['rouge_l_full_depth_vs_original']:.3f}")
    return write_result(out_dir, {"adapted": out_dir, "exits": exits_dir, "report": out_dir / "report.json"})


# ---------------------------------------------------------------------------- exit distillation
@task(name="generation_distill_exits", cache_policy=ARTIFACT_CACHE, persist_result=True)
def distill_exits(decoding: DecodingConfig, exit_config: DecoderExitsConfig, distill: GenerateDistillConfig,
                  distill_dir: Path, adapted_dir: Path | None, out_dir: Path, seed: int = 42,
                  logger: MetricLogger | None = None) -> dict:
    """The exit translators distilled towards the original full model on the frozen backbone
    (the adapted one when ``adapted_dir``, starting from its jointly trained exits); held-out
    agreement per exit point before and after. The saved exits carry an untrained policy (the
    ConsistentEE rounds of ``train_exits`` train it)."""
    logger = logger or NullLogger()
    _, _, adapter, points = exit_training_setup(decoding, exit_config, seed, adapted_dir)
    exits = DecoderExits(adapter, points, exit_head=exit_config.head, policy=True)
    if adapted_dir is not None:
        exits.load_state_dict(read_safetensors(Path(adapted_dir) / "exits" / "exits.safetensors"), strict=False)
    train, held = load_distill_set(Path(distill_dir) / "train.safetensors"), load_distill_set(Path(distill_dir) / "held_out.safetensors")
    before = evaluate_exits(exits, held, distill.batch_sequences)
    cfg = AdaptTraining(epochs=distill.epochs, lr=0.0, exit_lr=distill.lr, weight_decay=0.0,
                        batch_sequences=distill.batch_sequences, p_max=0.0, exit_scale=1.0, curriculum="all", rotation=1,
                        train_backbone=False)
    history = train_exits_and_backbone(exits, train, cfg, torch.Generator().manual_seed(seed),
                                       lambda batches, epoch: tqdm(batches, disable=None, leave=False, desc=f"distil exits epoch {epoch}"),
                                       _step_logger(logger, "distill"))
    after = evaluate_exits(exits, held, distill.batch_sequences)
    exits_dir = save_exits(exits, Path(out_dir) / "exits", {"decoder": decoding.decoder, "num_layers": adapter.num_layers,
                                                             "stage": "distilled", "adapted": adapted_dir is not None})
    report = {"points": points, "train_tokens": train.tokens, "held_out_tokens": held.tokens,
              "adapted": adapted_dir is not None, "steps": len(history),
              "agreement_before": before["agreement"], "agreement_after": after["agreement"],
              "agreement_last_before": before["agreement_last"], "agreement_last_after": after["agreement_last"],
              "kl_before": before["kl"], "kl_after": after["kl"], "perplexity": after["perplexity"]}
    atomic_write_json(Path(out_dir) / "report.json", report)
    for point, a, b in zip(points, before["agreement"], after["agreement"]):
        tqdm.write(f"[generate] exit at layer {point}: held-out agreement with the full model {a:.3f} -> {b:.3f}")
    logger.log_metrics({f"distill_agreement_layer_{p}": a for p, a in zip(points, after["agreement"])})
    return write_result(out_dir, {"exits": exits_dir, "report": Path(out_dir) / "report.json"})
