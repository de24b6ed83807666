"""Task: build a HashEE hash table (token id -> exit layer) on a task's training split.

Outputs in ``out_dir``::

    hash_table.safetensors   ``exit_table`` [V] (and ``inference_table`` for random_incons)
    hash_table.json          kind, buckets, layers, vocabulary size and hash, backbone, counts
    token_share.csv/.png     share of training token occurrences exiting at each layer
    result.json              stamp
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from prefect import task
from safetensors.torch import save

from models.hashee import (
    HashTableError,
    build_clustered_hash,
    build_frequency_hash,
    build_mi_hash,
    build_random_hash,
    check_table,
    token_counts,
)
from tasks.backbones import load_backbone, truncate_layers
from tasks.caching import ARTIFACT_CACHE
from tasks.checkpoint_files import read_json, read_safetensors
from config.params import BackboneConfig, HasheeConfig, TrainConfig
from tasks.data import load_meta
from tasks.features import encode_split
from tasks.io import atomic_write_bytes, atomic_write_json, atomic_write_text, write_result
from tasks.plots import bar_plot


def vocabulary_hash(tokenizer) -> str:
    """Identity of a tokenizer's vocabulary (token -> id), to refuse tables built for another one."""
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]


def build_table(kind: str, cfg: HasheeConfig, tokens: list[list[int]], labels: list, regression: bool,
                vocab_size: int, num_layers: int, special_ids: list[int], embeddings: torch.Tensor, seed: int):
    L, B = num_layers, cfg.buckets
    if kind in ("random", "random_incons"):
        return build_random_hash(vocab_size, L, B, special_ids, seed)
    if not tokens:
        raise HashTableError(f"the training split is empty: cannot count tokens for the {kind} hash")
    if kind == "frequency":
        return build_frequency_hash(tokens, vocab_size, L, B, special_ids, cfg.equal_mass)
    if kind == "mi":
        return build_mi_hash(tokens, labels, vocab_size, L, B, special_ids, regression)
    observed = token_counts(tokens, special_ids)
    return build_clustered_hash(embeddings, observed.keys(), L, B, special_ids, seed)


@task(name="build_hash_table", cache_policy=ARTIFACT_CACHE, persist_result=True)
def build_hash_table(hashee: HasheeConfig, train: TrainConfig, backbone: BackboneConfig, data_dir: Path,
                     out_dir: Path, cache_dir: Path | None = None, seed: int = 42) -> dict:
    """Build the table for ``train.task`` on its training split, subsampled with ``seed``: the
    same rows the HashEE model then trains on."""
    model, tokenizer = load_backbone(backbone.name, backbone.attn_implementation)
    model = truncate_layers(model, hashee.num_layers)
    num_layers = model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else model.config.n_layers
    meta = load_meta(data_dir, train.task)
    if "train" not in meta["rows"]:
        raise HashTableError(f"task {train.task!r} has no train split to build a hash table from")
    enc = encode_split(data_dir, train.task, "train", tokenizer, backbone.max_length, cache_dir, train.subsample.train, seed)
    tokens, labels = list(enc["input_ids"]), list(enc["labels"])
    if hashee.include_dev:
        dev = encode_split(data_dir, train.task, "dev", tokenizer, backbone.max_length, cache_dir, train.subsample.dev, seed)
        tokens += dev["input_ids"]
        labels += dev["labels"]
    special = sorted(set(tokenizer.all_special_ids))
    vocab_size = model.config.vocab_size
    embeddings = model.get_input_embeddings().weight
    regression = meta["spec"]["label_type"] == "float"
    table = build_table(hashee.kind, hashee, tokens, labels, regression, vocab_size, num_layers, special, embeddings, hashee.seed)
    check_table(table, vocab_size, num_layers)
    tensors = {"exit_table": table}
    if hashee.kind == "random_incons":  # a different random table at inference
        tensors["inference_table"] = build_random_hash(vocab_size, num_layers, hashee.buckets, special, hashee.seed + 1)

    occurrences = torch.tensor([t for seq in tokens for t in seq])
    share = [float((table[occurrences] == k).float().mean()) for k in range(1, num_layers + 1)]
    info = {"kind": hashee.kind, "buckets": hashee.buckets, "num_layers": num_layers, "vocab_size": vocab_size,
            "vocabulary_hash": vocabulary_hash(tokenizer), "backbone": backbone.name, "task": train.task,
            "equal_mass": hashee.equal_mass, "train_rows": len(enc["labels"]), "occurrence_share_per_layer": share,
            "avg_token_exit_layer": float(table[occurrences].float().mean())}
    atomic_write_bytes(out_dir / "hash_table.safetensors", save({k: v.contiguous() for k, v in tensors.items()}))
    atomic_write_json(out_dir / "hash_table.json", info)
    atomic_write_text(out_dir / "token_share.csv",
                      "layer,share\n" + "".join(f"{k},{s:.6f}\n" for k, s in enumerate(share, 1)))
    bar_plot(list(range(1, num_layers + 1)), share, "exit layer", "share of training token occurrences",
             f"{hashee.kind} hash (B={hashee.buckets}) on {train.task}", out_dir / "token_share.png")
    return write_result(out_dir, {"table": out_dir / "hash_table.safetensors", "info": info,
                                  "plot": out_dir / "token_share.png"})


def load_hash_table(table_dir: Path, tokenizer, num_layers: int, inference: bool = False) -> torch.Tensor:
    """Load a table and refuse it if it was built for another vocabulary or depth."""
    info = read_json(Path(table_dir) / "hash_table.json")
    if info["vocabulary_hash"] != vocabulary_hash(tokenizer):
        raise HashTableError(f"hash table in {table_dir} was built for another tokenizer/vocabulary "
                             f"({info['backbone']}); rebuild it for this backbone")
    if info["num_layers"] != num_layers:
        raise HashTableError(f"hash table in {table_dir} was built for {info['num_layers']} layers, "
                             f"the model has {num_layers}; rebuild it")
    tensors = read_safetensors(Path(table_dir) / "hash_table.safetensors")
    return tensors["inference_table" if inference and "inference_table" in tensors else "exit_table"]
