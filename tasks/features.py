"""Tokenised splits with a content-keyed cache, seeded subsampling and dynamic-padding batches."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Iterator

import torch

from models.errors import CheckpointError
from tasks.checkpoint_files import read_torch
from tasks.data import load_columns, load_meta
from tasks.io import atomic_torch_save


def cached_encoding(cache: Path | None) -> dict | None:
    """The token cache entry ``cache`` (None when there is none, or a damaged one: it is rebuilt)."""
    if cache is None or not cache.exists():
        return None
    try:
        return read_torch(cache, weights_only=True)
    except CheckpointError as err:
        print(f"{err.args[0].split(';')[0]}: tokenising again", file=sys.stderr, flush=True)
        return None


def encode_split(data_dir: Path, task: str, split: str, tokenizer, max_length: int, cache_dir: Path | None,
                 subsample: int | None = None, seed: int = 42) -> dict[str, list]:
    """Token ids, token types and labels of one split, optionally a seeded subsample.

    Cached under ``cache_dir`` keyed by the split's source hash, the tokenizer's vocabulary
    and ``max_length``.
    """
    meta = load_meta(data_dir, task)
    key_src = f"{task}|{split}|{meta['sources']}|{max_length}|{tokenizer.name_or_path}|{len(tokenizer)}|{tokenizer.__class__.__name__}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    cache = cache_dir / f"{task}-{split}-{key}.pt" if cache_dir is not None else None
    enc = cached_encoding(cache)
    if enc is None:
        cols = load_columns(data_dir, task, split)
        pairs = [t for t in cols["text_b"] if t is not None]
        args = (cols["text_a"], cols["text_b"]) if pairs else (cols["text_a"],)
        tok = tokenizer(*args, truncation=True, max_length=max_length)
        enc = {"input_ids": tok["input_ids"], "labels": cols["label"]}
        if "token_type_ids" in tok:
            enc["token_type_ids"] = tok["token_type_ids"]
        if cache is not None:
            atomic_torch_save(cache, enc)
    if subsample is not None and subsample < len(enc["labels"]):
        g = torch.Generator().manual_seed(seed)
        idx = sorted(torch.randperm(len(enc["labels"]), generator=g)[:subsample].tolist())
        enc = {k: [v[i] for i in idx] for k, v in enc.items()}
    return enc


def batches(enc: dict[str, list], batch_size: int, pad_id: int, shuffle: bool = False, seed: int = 0,
            device: torch.device | str = "cpu", order: list[int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded batches (padding to the longest row of each batch), in ``order`` when given.

    Columns other than token ids, token types and labels (e.g. ``memorized``) are per-row
    numbers and come out as ``[b]`` tensors.
    """
    n = len(enc["labels"])
    extra = [k for k in enc if k not in ("input_ids", "token_type_ids", "labels")]
    if order is None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() if shuffle else list(range(n))
    regression = isinstance(enc["labels"][0], float)
    for start in range(0, len(order), batch_size):  # an order may repeat rows (oversampling)
        idx = order[start:start + batch_size]
        length = max(len(enc["input_ids"][i]) for i in idx)
        ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), length), dtype=torch.long)
        types = torch.zeros((len(idx), length), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = enc["input_ids"][i]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            if "token_type_ids" in enc:
                types[row, : len(seq)] = torch.tensor(enc["token_type_ids"][i])
        labels = torch.tensor([enc["labels"][i] for i in idx], dtype=torch.float32 if regression else torch.long)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if "token_type_ids" in enc:
            batch["token_type_ids"] = types
        for key in extra:
            batch[key] = torch.tensor([enc[key][i] for i in idx])
        yield {k: v.to(device) for k, v in batch.items()}


def num_batches(enc: dict[str, list], batch_size: int) -> int:
    return (len(enc["labels"]) + batch_size - 1) // batch_size


def split_fingerprint(enc: dict[str, list]) -> str:
    """Content hash of an encoded split's token ids and labels (row order included)."""
    h = hashlib.sha256()
    for ids, label in zip(enc["input_ids"], enc["labels"]):
        h.update(repr((ids, label)).encode())
    return h.hexdigest()
