"""Difficulty datasets: the published SNLI sets, sentence-level sets annotated by a multi-exit
model, and token-level CoNLL-2003 sets annotated by a multi-exit token classifier.

Every difficulty dataset is written as ``difficulty.jsonl`` (one instance per line) plus
``result.json``::

    sentence level: {"text_a", "text_b", "labels": [L bits], "part": "train" | "dev" | "test"}
    token level:    {"words": [...], "labels": [[L bits] per word], "part": ...}

Bits: 1 = that layer's exit is right. ``part`` is the predictor split (seeded); dev is for
model selection, test only for the final numbers.
"""

from __future__ import annotations

import csv
import json
import random
from functools import partial
from pathlib import Path

import torch
from prefect import task
from tqdm.auto import tqdm

from models.errors import ExitflowError
from models.learnability import IGNORE
from models.metrics import correct_predictions
from models.token_exits import TokenMultiExitModel, fit_token_annotator
from models.training import record_exits
from tasks.backbones import load_backbone, load_checkpoint, pick_device, save_backbone
from tasks.caching import ARTIFACT_CACHE
from tasks.checkpoint_files import check_files, read_torch
from config.params import BackboneConfig, LearnabilityConfig
from tasks.data import load_columns
from tasks.features import batches
from tasks.io import atomic_torch_save, atomic_write_text, write_result
from tasks.train import seed_everything

PARTS = ("train", "dev", "test")


class DifficultyDataError(ExitflowError, ValueError):
    """A difficulty or CoNLL file is malformed; the message names the file and line."""


def parse_bits(raw: str, where: str, width: int | None) -> list[int]:
    """``"[1, 0, 1]"`` or ``"1"`` -> list of bits; checks values and (optionally) the length."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise DifficultyDataError(f"{where}: label {raw!r} is not a bit or a JSON list of bits") from None
    bits = value if isinstance(value, list) else [value]
    if not bits or any(b not in (0, 1) or isinstance(b, bool) for b in bits):
        raise DifficultyDataError(f"{where}: label {raw!r} must contain only 0 and 1")
    if width is not None and len(bits) != width:
        raise DifficultyDataError(f"{where}: {len(bits)} labels but earlier rows have {width}")
    return bits


def read_difficulty_tsv(path: Path) -> list[dict]:
    """``sentence1 <tab> sentence2 <tab> label`` rows (label: a bit or a list of per-layer bits)."""
    path = Path(path)
    rows, width = [], None
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["sentence1", "sentence2", "label"]:
            raise DifficultyDataError(f"{path}:1: expected the header sentence1, sentence2, label; got {header}")
        for line, cols in enumerate(reader, start=2):
            if len(cols) != 3:
                raise DifficultyDataError(f"{path}:{line}: expected 3 tab-separated columns, got {len(cols)}")
            bits = parse_bits(cols[2].strip(), f"{path}:{line}", width)
            width = len(bits)
            rows.append({"text_a": cols[0], "text_b": cols[1] or None, "labels": bits})
    if not rows:
        raise DifficultyDataError(f"{path}: no rows")
    return rows


def read_conll(path: Path) -> list[dict]:
    """CoNLL-2003 ``token POS tag`` lines, blank line between sentences -> ``{"words", "tags"}``."""
    path = Path(path)
    sentences, words, tags = [], [], []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append({"words": words, "tags": tags})
                words, tags = [], []
                continue
            cols = line.split()
            if len(cols) < 2:
                raise DifficultyDataError(f"{path}:{line_no}: expected 'token ... tag', got {line!r}")
            words.append(cols[0])
            tags.append(cols[-1])
    if words:
        sentences.append({"words": words, "tags": tags})
    if not sentences:
        raise DifficultyDataError(f"{path}: no sentences")
    return sentences


def assign_parts(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Seeded random split of n rows into predictor train/dev/test by ``fractions``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_train, n_dev = round(fractions[0] * n), round(fractions[1] * n)
    parts = [""] * n
    for rank, i in enumerate(order):
        parts[i] = "train" if rank < n_train else "dev" if rank < n_train + n_dev else "test"
    return parts


def encode_words(tokenizer, words: list[list[str]], max_length: int) -> dict[str, list]:
    """Sub-word ids for pre-split sentences and, per sub-token, the index of the word it starts
    (-1 for special tokens, continuation sub-tokens and truncated words): the first sub-token
    carries the word's label."""
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    first_of = []
    for i in range(len(words)):
        ids, previous, row = enc.word_ids(i), None, []
        for w in ids:
            row.append(w if w is not None and w != previous else -1)
            previous = w if w is not None else previous
        first_of.append(row)
    return {"input_ids": enc["input_ids"], "word_index": first_of}


def _write_dataset(out_dir: Path, rows: list[dict], info: dict) -> dict:
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "difficulty.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    layers = len(rows[0]["labels"]) if "words" not in rows[0] else len(rows[0]["labels"][0])
    counts = {p: sum(r["part"] == p for r in rows) for p in PARTS}
    return write_result(out_dir, {"dataset": out_dir / "difficulty.jsonl", "rows": counts, "num_layers": layers, **info})


def load_difficulty(dataset_dir: Path) -> list[dict]:
    path = Path(dataset_dir) / "difficulty.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@task(name="load_published_difficulty", cache_policy=ARTIFACT_CACHE, persist_result=True)
def load_published_difficulty(source: Path, out_dir: Path, dev_fraction: float, seed: int) -> dict:
    """A published set (``train.tsv``/``test.tsv``): its train file is split into predictor
    train/dev (seeded), its test file is the predictor test part."""
    train = read_difficulty_tsv(Path(source) / "train.tsv")
    test = read_difficulty_tsv(Path(source) / "test.tsv")
    if len(train[0]["labels"]) != len(test[0]["labels"]):
        raise DifficultyDataError(f"{source}: train labels have {len(train[0]['labels'])} layers, "
                                  f"test labels {len(test[0]['labels'])}")
    parts = assign_parts(len(train), (1.0 - dev_fraction, dev_fraction, 0.0), seed)
    rows = [{**r, "part": p} for r, p in zip(train, parts)] + [{**r, "part": "test"} for r in test]
    return _write_dataset(out_dir, rows, {"source": Path(source), "annotator": None})


@task(name="build_sentence_difficulty", cache_policy=ARTIFACT_CACHE, persist_result=True)
def build_sentence_difficulty(annotator_dir: Path, backbone: BackboneConfig, data_dir: Path, out_dir: Path,
                              fractions: tuple[float, float, float], seed: int = 42, device: str = "auto") -> dict:
    """Annotate every dev instance of the annotator's task with one correctness bit per exit
    (argmax == gold), then split the annotated rows into predictor train/dev/test (seeded)."""
    torch_device = pick_device(device)
    model, tokenizer, meta = load_checkpoint(annotator_dir, backbone.attn_implementation)
    model.to(torch_device)
    cols = load_columns(data_dir, meta["task"], "dev")
    pairs = [t for t in cols["text_b"] if t is not None]
    tok = tokenizer(*((cols["text_a"], cols["text_b"]) if pairs else (cols["text_a"],)), truncation=True,
                    max_length=backbone.max_length)
    enc = {"input_ids": tok["input_ids"], "labels": cols["label"]}
    if "token_type_ids" in tok:
        enc["token_type_ids"] = tok["token_type_ids"]
    rec = record_exits(model, batches(enc, 64, tokenizer.pad_token_id or 0, device=torch_device))
    logits, labels = rec.logits, rec.labels
    bits = correct_predictions(logits.cpu(), labels.cpu(), model.config.regression).long().T  # [n, L]
    parts = assign_parts(len(bits), fractions, seed)
    rows = [{"text_a": a, "text_b": b, "labels": bit.tolist(), "part": p}
            for a, b, bit, p in zip(cols["text_a"], cols["text_b"], bits, parts)]
    return _write_dataset(out_dir, rows, {"source": f"{meta['task']} dev", "annotator": Path(annotator_dir),
                                          "annotator_layer_accuracy": (100.0 * bits.float().mean(0)).tolist()})


def annotator_batches(enc: dict, batch_size: int, pad: int, seed: int, device, steps: int, epochs: int, epoch: int):
    """One epoch of the token annotator's shuffled batches (seed ``seed + epoch``), with a progress bar."""
    return tqdm(token_batches(enc, batch_size, pad, shuffle=True, seed=seed + epoch, device=device), total=steps,
                disable=None, leave=False, desc=f"token annotator epoch {epoch}/{epochs}")


def report_annotator_epoch(epoch: int, loss: float) -> None:
    tqdm.write(f"[token annotator] epoch {epoch}: loss {loss:.4f}")


@task(name="train_token_annotator", cache_policy=ARTIFACT_CACHE, persist_result=True)
def train_token_annotator(cfg: LearnabilityConfig, backbone: BackboneConfig, conll_dir: Path, out_dir: Path,
                          seed: int = 42, device: str = "auto") -> dict:
    """A multi-exit token classifier (one tag head per layer, mean of the per-layer losses) on
    CoNLL-2003 train (seeded subsample of ``cfg.token_train_sentences``)."""
    out_dir = Path(out_dir)
    torch_device = pick_device(device)
    seed_everything(seed)
    train = read_conll(Path(conll_dir) / "train.txt")
    if cfg.token_train_sentences is not None and cfg.token_train_sentences < len(train):
        train = random.Random(seed).sample(train, cfg.token_train_sentences)
    tag_names = sorted({t for s in train for t in s["tags"]})
    backbone_model, tokenizer = load_backbone(backbone.name, backbone.attn_implementation)
    model = TokenMultiExitModel(backbone_model, len(tag_names)).to(torch_device)
    enc = token_batches_source(tokenizer, train, tag_names, backbone.max_length)
    steps = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    fit_token_annotator(model, partial(annotator_batches, enc, cfg.batch_size, tokenizer.pad_token_id or 0, seed, torch_device, steps,
                                       cfg.token_epochs), steps, cfg.token_epochs, cfg.token_lr, report_annotator_epoch)
    save_backbone(model.backbone, tokenizer, out_dir / "checkpoint" / "backbone")
    atomic_torch_save(out_dir / "checkpoint" / "heads.pt", {"heads": model.heads.state_dict(), "tags": tag_names})
    return write_result(out_dir, {"checkpoint": out_dir / "checkpoint", "tags": tag_names, "train_sentences": len(train)})


def load_token_annotator(ckpt_dir: Path, attn_implementation: str = "sdpa"):
    from transformers import AutoModel, AutoTokenizer

    ckpt_dir = Path(ckpt_dir)
    check_files(ckpt_dir)
    saved = read_torch(ckpt_dir / "heads.pt")
    backbone = AutoModel.from_pretrained(ckpt_dir / "backbone", attn_implementation=attn_implementation)
    model = TokenMultiExitModel(backbone, len(saved["tags"]))
    model.heads.load_state_dict(saved["heads"])
    return model.eval(), AutoTokenizer.from_pretrained(ckpt_dir / "backbone"), saved["tags"]


def token_batches_source(tokenizer, sentences: list[dict], tag_names: list[str], max_length: int) -> dict[str, list]:
    """Sub-word ids plus, per sub-token, the word's tag id at first sub-tokens and -100 elsewhere."""
    enc = encode_words(tokenizer, [s["words"] for s in sentences], max_length)
    tag_id = {t: i for i, t in enumerate(tag_names)}
    enc["tags"] = [[tag_id.get(s["tags"][w], IGNORE) if w >= 0 else IGNORE for w in row]
                   for s, row in zip(sentences, enc["word_index"])]
    return enc


def token_batches(enc: dict[str, list], batch_size: int, pad_id: int, shuffle: bool = False, seed: int = 0,
                  device="cpu", order: list[int] | None = None):
    """Right-padded batches of every per-sub-token column (ids padded with ``pad_id``, others with -100)."""
    n = len(enc["input_ids"])
    if order is None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() if shuffle else list(range(n))
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        length = max(len(enc["input_ids"][i]) for i in idx)
        batch = {"attention_mask": torch.zeros(len(idx), length, dtype=torch.long)}
        for key, values in enc.items():
            first = values[idx[0]]
            if isinstance(first, list) and first and isinstance(first[0], list):  # per-token bit lists [s, L]
                width = len(first[0])
                t = torch.full((len(idx), length, width), IGNORE, dtype=torch.long)
                for row, i in enumerate(idx):
                    t[row, : len(values[i])] = torch.tensor(values[i], dtype=torch.long)
            else:
                t = torch.full((len(idx), length), pad_id if key == "input_ids" else IGNORE, dtype=torch.long)
                for row, i in enumerate(idx):
                    t[row, : len(values[i])] = torch.tensor(values[i], dtype=torch.long)
            batch[key] = t
        for row, i in enumerate(idx):
            batch["attention_mask"][row, : len(enc["input_ids"][i])] = 1
        yield {k: v.to(device) for k, v in batch.items()}


def annotated_word_rows(sentences: list[dict], enc: dict[str, list], bits_per_sentence: list[list], parts: list[str]) -> list[dict]:
    """One row per sentence holding the words that carry bits, each with its own bits.

    ``bits_per_sentence[i]`` has one entry per labelled first sub-token of sentence i, in order
    (``enc`` from ``token_batches_source``). A word that tokenises to nothing, is truncated away
    or has an unknown tag has no labelled sub-token: it is dropped, never allowed to shift the
    labels of the words after it. Sentences without any labelled word are left out.
    """
    rows = []
    for i, (sentence, bits, part) in enumerate(zip(sentences, bits_per_sentence, parts)):
        labelled = [w for w, tag in zip(enc["word_index"][i], enc["tags"][i]) if tag != IGNORE]
        if len(labelled) != len(bits):
            raise DifficultyDataError(f"sentence {i}: {len(bits)} bit rows for {len(labelled)} labelled words")
        if labelled:
            rows.append({"words": [sentence["words"][w] for w in labelled], "labels": bits, "part": part})
    return rows


@task(name="build_token_difficulty", cache_policy=ARTIFACT_CACHE, persist_result=True)
def build_token_difficulty(annotator_dir: Path, backbone: BackboneConfig, conll_dir: Path, out_dir: Path,
                           fractions: tuple[float, float, float], seed: int = 42, device: str = "auto") -> dict:
    """Annotate every word of CoNLL-2003 dev with one bit per exit (first sub-token's tag argmax
    == gold tag), then split the sentences into predictor train/dev/test (seeded)."""
    torch_device = pick_device(device)
    model, tokenizer, tag_names = load_token_annotator(annotator_dir, backbone.attn_implementation)
    model.to(torch_device)
    sentences = read_conll(Path(conll_dir) / "dev.txt")
    enc = token_batches_source(tokenizer, sentences, tag_names, backbone.max_length)
    bits_per_sentence = []
    with torch.no_grad():
        for batch in token_batches(enc, 64, tokenizer.pad_token_id or 0, device=torch_device):
            logits, _ = model(batch["input_ids"], batch["attention_mask"])  # [L, b, s, c]
            right = (logits.argmax(-1) == batch["tags"][None]).long().permute(1, 2, 0).cpu()  # [b, s, L]
            for row_bits, row_tags in zip(right, batch["tags"].cpu()):
                bits_per_sentence.append(row_bits[row_tags != IGNORE].tolist())
    rows = annotated_word_rows(sentences, enc, bits_per_sentence, assign_parts(len(sentences), fractions, seed))
    kept = sum(len(r["labels"]) for r in rows)
    flat = torch.tensor([b for r in rows for b in r["labels"]], dtype=torch.float)
    return _write_dataset(out_dir, rows, {"source": "conll2003 dev", "annotator": Path(annotator_dir), "tokens": kept,
                                          "tags": tag_names, "annotator_layer_accuracy": (100.0 * flat.mean(0)).tolist()})
