"""Tasks: train one difficulty predictor and score it; the human-difficulty classifier.

Selection reads the predictor-dev part only: the test part sits behind ``DifficultyParts.test``,
which raises until ``open_test()`` is called after the model is chosen.

Outputs: ``result.json`` (test and dev metrics, per-epoch history, selected epoch); the human
study also writes ``accuracy.png`` (paper Figure 1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from prefect import task
from tqdm.auto import tqdm

from models.learnability import (
    BiLSTMPredictor,
    EncoderPredictor,
    LinearB,
    LinearM,
    difficulty_metrics,
    fit_classifier,
    fit_predictor,
    item_batches,
    majority_bits,
    negative_share,
    oversample_order,
    predict_bits,
)
from tasks.backbones import load_backbone, load_checkpoint, pick_device
from tasks.caching import ARTIFACT_CACHE
from config.params import BackboneConfig, LearnabilityConfig
from tasks.difficulty import (
    IGNORE,
    DifficultyDataError,
    encode_words,
    load_difficulty,
    load_token_annotator,
    read_difficulty_tsv,
    token_batches,
)
from tasks.features import batches
from tasks.io import atomic_write_json, write_result
from tasks.plots import layerwise_plot
from tasks.train import seed_everything


class SealedPartError(RuntimeError):
    """The predictor-test part was read before model selection finished."""


class DifficultyParts:
    """Predictor train/dev rows, and the test rows behind a guard."""

    def __init__(self, rows: list[dict], source: str):
        self.train = [r for r in rows if r["part"] == "train"]
        self.dev = [r for r in rows if r["part"] == "dev"]
        self._test = [r for r in rows if r["part"] == "test"]
        self._sealed = True
        if not self.train or not self.dev or not self._test:
            raise DifficultyDataError(f"{source}: needs rows in every part (train {len(self.train)}, dev {len(self.dev)}, "
                                      f"test {len(self._test)})")

    @property
    def test(self) -> list[dict]:
        if self._sealed:
            raise SealedPartError("the predictor-test part is sealed until model selection is done (open_test())")
        return self._test

    def open_test(self) -> list[dict]:
        self._sealed = False
        return self._test


def check_difficulty_rows(rows: list[dict], source: str, num_layers: int | None = None) -> int:
    """Every row has the same number of per-layer bits, all in {0, 1} (token level: per word);
    it must equal the annotator's layers when one is given. Returns L."""
    width = None
    for i, r in enumerate(rows, start=1):
        per_item = r["labels"] if "words" in r else [r["labels"]]
        if "words" in r and len(r["labels"]) != len(r["words"]):
            raise DifficultyDataError(f"{source}: row {i}: {len(r['words'])} words but {len(r['labels'])} label lists")
        for bits in per_item:
            if any(b not in (0, 1) for b in bits):
                raise DifficultyDataError(f"{source}: row {i}: labels must be 0 or 1, got {bits}")
            if width is not None and len(bits) != width:
                raise DifficultyDataError(f"{source}: row {i}: {len(bits)} labels but earlier rows have {width}")
            width = len(bits)
    if num_layers is not None and width != num_layers:
        raise DifficultyDataError(f"{source}: labels have {width} layers but the annotator has {num_layers}")
    return width


def _item_labels(rows: list[dict]) -> np.ndarray:
    """``[items, L]``: instances, or every word of every sentence."""
    return np.array([bits for r in rows for bits in (r["labels"] if "words" in r else [r["labels"]])])


def _encode(rows: list[dict], tokenizer, max_length: int) -> dict[str, list]:
    """Sub-word ids and labels: ``[L]`` per instance, or ``[s, L]`` per sentence (-100 off first sub-tokens)."""
    if "words" in rows[0]:
        enc = encode_words(tokenizer, [r["words"] for r in rows], max_length)
        L = len(rows[0]["labels"][0])
        enc["labels"] = [[r["labels"][w] if 0 <= w < len(r["labels"]) else [IGNORE] * L for w in idx]
                         for r, idx in zip(rows, enc["word_index"])]
        del enc["word_index"]
        return enc
    pairs = [r["text_b"] for r in rows if r.get("text_b")]
    texts = ([r["text_a"] for r in rows], [r.get("text_b") or "" for r in rows]) if pairs else ([r["text_a"] for r in rows],)
    tok = tokenizer(*texts, truncation=True, max_length=max_length)
    enc = {"input_ids": tok["input_ids"], "labels": [r["labels"] for r in rows]}
    if "token_type_ids" in tok:
        enc["token_type_ids"] = tok["token_type_ids"]
    return enc


def _sequence_batches(enc, batch_size, pad, device, order=None):
    """Token-level sets (``[s, L]`` labels per sentence) through ``token_batches``, others through ``batches``."""
    first = enc["labels"][0]
    if isinstance(first, list) and first and isinstance(first[0], list):
        return token_batches(enc, batch_size, pad, device=device, order=order)
    return batches(enc, batch_size, pad, device=device, order=order)


def _annotator_states(annotator_dir: Path, rows: list[dict], backbone: BackboneConfig, device) -> tuple[torch.Tensor, int]:
    """Frozen annotator states per item: ``[items, L, d]`` (pooled per exit, or per word at its first sub-token).

    Loads the annotator per call (train, dev, then test after selection). Loading draws from the
    RNG (head init before the weights arrive), so the published Linear-B numbers depend on this order.
    """
    token_level = "words" in rows[0]
    load = load_token_annotator if token_level else load_checkpoint
    model, tokenizer, _ = load(annotator_dir, backbone.attn_implementation)
    model.to(device).eval()
    enc = _encode(rows, tokenizer, backbone.max_length)
    out = []
    with torch.no_grad():
        for batch in _sequence_batches(enc, 64, tokenizer.pad_token_id or 0, device):
            if token_level:
                _, states = model(batch["input_ids"], batch["attention_mask"])  # [L, b, s, d]
                keep = batch["labels"][..., 0] != IGNORE  # first sub-tokens [b, s]
                out.append(states.permute(1, 2, 0, 3)[keep].cpu())  # [words, L, d]
            else:
                states = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).states
                out.append(states.transpose(0, 1).cpu())  # [b, L, d]
    return torch.cat(out), model.num_layers


@dataclass
class PredictorSetup:
    """A predictor ready to fit: the model, its epochs and lr, oversampling counts and the base
    order, and batch makers (``train_batches(epoch)``, ``dev_batches()``, ``test_batches(rows)``)."""

    model: torch.nn.Module
    epochs: int
    lr: float
    counts: tuple[np.ndarray, np.ndarray]
    order: list[int]
    train_batches: Callable
    dev_batches: Callable
    test_batches: Callable


def majority_result(parts: DifficultyParts, out_dir: Path) -> dict:
    """The majority baseline: predictor-train's per-layer prior for every dev and test item."""
    prior = majority_bits(_item_labels(parts.train))
    dev_gold = _item_labels(parts.dev)
    dev = difficulty_metrics(dev_gold, np.tile(prior, (len(dev_gold), 1)))
    test_gold = _item_labels(parts.open_test())
    test = difficulty_metrics(test_gold, np.tile(prior, (len(test_gold), 1)))
    return _finish(out_dir, "majority", test, dev, [], None, {"prior": prior.tolist()})


def epoch_item_batches(states: torch.Tensor, labels: torch.Tensor, order: list[int], seed: int, device, epoch: int):
    """One epoch of Linear-B batches: ``order`` shuffled with ``seed + epoch``."""
    return item_batches(states, labels, _shuffled(order, seed + epoch), device)


def annotator_test_batches(annotator_dir: Path, backbone: BackboneConfig, device, rows: list[dict]):
    """Linear-B batches over the test rows' annotator states (loaded once selection is over)."""
    x_test, _ = _annotator_states(annotator_dir, rows, backbone, device)
    y_test = torch.tensor(_item_labels(rows))
    return item_batches(x_test, y_test, list(range(len(y_test))), device)


def linear_b_setup(cfg: LearnabilityConfig, parts: DifficultyParts, rows: list[dict], source: str, L: int,
                   backbone: BackboneConfig, annotator_dir: Path | None, seed: int, device) -> PredictorSetup:
    """Linear-B on the frozen annotator's states (train, then dev; test after selection)."""
    if annotator_dir is None:
        raise DifficultyDataError(f"{source}: Linear-B probes the annotator's hidden states, and this dataset has no "
                                  "annotator (published sets ship labels only)")
    (x_train, layers), (x_dev, _) = (_annotator_states(annotator_dir, part, backbone, device) for part in (parts.train, parts.dev))
    check_difficulty_rows(rows, source, layers)
    y_train, y_dev = torch.tensor(_item_labels(parts.train)), torch.tensor(_item_labels(parts.dev))
    model = LinearB(x_train.shape[-1], L).to(device)
    counts = ((y_train == 0).sum(1).numpy(), np.full(len(y_train), L))
    order = oversample_order(*counts, seed) if cfg.oversample else list(range(len(y_train)))
    return PredictorSetup(model, cfg.linear_epochs, cfg.linear_lr, counts, order,
                          partial(epoch_item_batches, x_train, y_train, order, seed, device),
                          partial(item_batches, x_dev, y_dev, list(range(len(y_dev))), device),
                          partial(annotator_test_batches, annotator_dir, backbone, device))


def epoch_sequence_batches(enc: dict, batch_size: int, pad: int, device, order: list[int], seed: int, epoch: int):
    """One epoch of text batches: ``order`` shuffled with ``seed + epoch``."""
    return _sequence_batches(enc, batch_size, pad, device, _shuffled(order, seed + epoch))


def encoded_batches(tokenizer, max_length: int, pad: int, device, rows: list[dict]):
    """Batches of 64 over ``rows`` encoded in order (the test part, once selection is over)."""
    return _sequence_batches(_encode(rows, tokenizer, max_length), 64, pad, device)


def text_predictor_setup(predictor: str, cfg: LearnabilityConfig, parts: DifficultyParts, L: int, token_level: bool,
                         backbone: BackboneConfig, seed: int, device) -> PredictorSetup:
    """Linear-M, BiLSTM or the fine-tuned encoder, on the rows' text."""
    backbone_model, tokenizer = load_backbone(backbone.name, backbone.attn_implementation)
    embeddings = backbone_model.get_input_embeddings().weight
    if predictor == "linear_m":
        if token_level:
            raise DifficultyDataError("Linear-M reads non-contextual mean-pooled embeddings: sentence level only")
        model, epochs, lr = LinearM(embeddings, L), cfg.linear_epochs, cfg.linear_lr
    elif predictor == "bilstm":
        model, epochs, lr = BiLSTMPredictor(embeddings, L, token_level=token_level), cfg.bilstm_epochs, cfg.bilstm_lr
    elif predictor == "bert":
        model, epochs, lr = EncoderPredictor(backbone_model, L, token_level=token_level), cfg.bert_epochs, cfg.bert_lr
    else:
        raise ValueError(f"unknown predictor {predictor!r}")
    model.to(device)
    pad = tokenizer.pad_token_id or 0
    enc_train = _encode(parts.train, tokenizer, backbone.max_length)
    enc_dev = _encode(parts.dev, tokenizer, backbone.max_length)
    counts = _label_counts(parts.train)
    order = oversample_order(*counts, seed) if cfg.oversample else list(range(len(parts.train)))
    if predictor == "bert" and cfg.bert_max_train_rows is not None:
        order = order[: cfg.bert_max_train_rows]
    return PredictorSetup(model, epochs, lr, counts, order,
                          partial(epoch_sequence_batches, enc_train, cfg.batch_size, pad, device, order, seed),
                          partial(_sequence_batches, enc_dev, 64, pad, device),
                          partial(encoded_batches, tokenizer, backbone.max_length, pad, device))


def epoch_progress(predictor: str, epochs: int, batches, epoch: int):
    return tqdm(batches, disable=None, leave=False, desc=f"{predictor} epoch {epoch}/{epochs}")


@task(name="train_difficulty_predictor", cache_policy=ARTIFACT_CACHE, persist_result=True)
def train_difficulty_predictor(predictor: str, cfg: LearnabilityConfig, backbone: BackboneConfig, dataset_dir: Path,
                               out_dir: Path, annotator_dir: Path | None = None, seed: int = 42,
                               device: str = "auto") -> dict:
    """Fit one predictor on predictor-train (oversampled), keep the epoch with the best negative-label
    F1 on predictor-dev, then score predictor-test. Returns ``{"test": metrics, "dev": metrics, ...}``."""
    torch_device = pick_device(device)
    seed_everything(seed)
    source = str(Path(dataset_dir) / "difficulty.jsonl")
    rows = load_difficulty(dataset_dir)
    L = check_difficulty_rows(rows, source)
    parts = DifficultyParts(rows, source)
    if predictor == "majority":
        return majority_result(parts, out_dir)
    if predictor == "linear_b":
        setup = linear_b_setup(cfg, parts, rows, source, L, backbone, annotator_dir, seed, torch_device)
    else:
        setup = text_predictor_setup(predictor, cfg, parts, L, "words" in rows[0], backbone, seed, torch_device)
    counts = setup.counts
    shares = {"negative_share_train": negative_share(*counts), "negative_share_train_oversampled": negative_share(*counts, setup.order)}
    tqdm.write(f"[{predictor}] {source}: negative-label share of predictor-train {shares['negative_share_train']:.1%}"
               f" -> {shares['negative_share_train_oversampled']:.1%} as trained (learnability.oversample: {cfg.oversample})")
    history, best = fit_predictor(setup.model, predictor, setup.train_batches, setup.dev_batches, setup.epochs, setup.lr,
                                  progress=partial(epoch_progress, predictor, setup.epochs))
    test_rows = parts.open_test()  # selection is over: the test part is read once, here
    test = difficulty_metrics(*predict_bits(setup.model, predictor, setup.test_batches(test_rows)))
    return _finish(out_dir, predictor, test, best["dev"], history, best["epoch"], shares)


def _label_counts(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per row, for oversampling: ``(negative labels [n], labels [n])`` over its layers (and words)."""
    bits = [np.asarray(r["labels"]) for r in rows]
    return np.array([int((b == 0).sum()) for b in bits]), np.array([b.size for b in bits])


def _shuffled(order: list[int], seed: int) -> list[int]:
    out = list(order)
    random.Random(seed).shuffle(out)
    return out


def _finish(out_dir: Path, predictor: str, test: dict, dev: dict, history: list[dict], epoch, extra: dict) -> dict:
    result = {"predictor": predictor, "test": test, "dev": dev, "history": history, "selected_epoch": epoch, **extra}
    atomic_write_json(Path(out_dir) / "result.json", result)
    return result


def human_epoch_batches(enc: dict, batch_size: int, pad: int, device, seed: int, epochs: int, epoch: int):
    """One epoch of the human-difficulty classifier's batches (rows shuffled with ``seed + epoch``)."""
    order = _shuffled(list(range(len(enc["labels"]))), seed + epoch)
    return tqdm(_sequence_batches(enc, batch_size, pad, device, order), disable=None, leave=False,
                desc=f"human difficulty epoch {epoch}/{epochs}")


def report_human_epoch(record: dict) -> None:
    tqdm.write(f"[human difficulty] epoch {record['epoch']}: train {record['train_accuracy']:.1f}, "
               f"test {record['test_accuracy']:.1f}")


@task(name="human_difficulty", cache_policy=ARTIFACT_CACHE, persist_result=True)
def human_difficulty(cfg: LearnabilityConfig, backbone: BackboneConfig, source: Path, out_dir: Path, seed: int = 42,
                     device: str = "auto") -> dict:
    """Paper Figure 1: fine-tune the backbone as a binary difficult/simple classifier on
    ``snli_human/train.tsv``; train and test accuracy after every epoch (no selection)."""
    torch_device = pick_device(device)
    seed_everything(seed)
    parts = {}
    for split in ("train", "test"):
        rows = read_difficulty_tsv(Path(source) / f"{split}.tsv")
        if len(rows[0]["labels"]) != 1:
            raise DifficultyDataError(f"{source}/{split}.tsv: expected one 0/1 label per row (1 = difficult)")
        parts[split] = [{**r, "labels": r["labels"][0]} for r in rows]
    backbone_model, tokenizer = load_backbone(backbone.name, backbone.attn_implementation)
    model = EncoderPredictor(backbone_model, 2).to(torch_device)
    pad = tokenizer.pad_token_id or 0
    enc = {s: _encode(rows, tokenizer, backbone.max_length) for s, rows in parts.items()}
    history = fit_classifier(model, partial(human_epoch_batches, enc["train"], cfg.batch_size, pad, torch_device, seed, cfg.human_epochs),
                             {s: partial(_sequence_batches, enc[s], 64, pad, torch_device) for s in ("train", "test")},
                             cfg.human_epochs, cfg.human_lr, report_human_epoch)
    plot = layerwise_plot({"train": [h["train_accuracy"] for h in history], "test": [h["test_accuracy"] for h in history]},
                          "SNLI human-defined difficulty: accuracy per epoch", Path(out_dir) / "accuracy.png", xlabel="epoch",
                          ylabel="accuracy (%)")
    return write_result(out_dir, {"history": history, "plot": Path(plot), "rows": {s: len(r) for s, r in parts.items()}})
