"""The hash-table artifact is refused for another tokenizer or depth; Rand-incons swaps tables."""

import json

import pytest
import torch
from safetensors.torch import save
from transformers import BertTokenizer

from models.hashee import HashTableError
from tasks.hash_table import load_hash_table, vocabulary_hash


def tokenizer(words):
    return BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])})


def write_table(path, tok, num_layers, inference=None):
    path.mkdir()
    tensors = {"exit_table": torch.full((len(tok),), num_layers)}
    if inference is not None:
        tensors["inference_table"] = inference
    (path / "hash_table.safetensors").write_bytes(save(tensors))
    (path / "hash_table.json").write_text(json.dumps({"vocabulary_hash": vocabulary_hash(tok), "num_layers": num_layers,
                                                      "backbone": "tiny"}))


def test_table_for_another_tokenizer_or_depth_is_refused(tmp_path):
    ours, theirs = tokenizer(["good", "bad"]), tokenizer(["bad", "good"])  # same size, different ids
    write_table(tmp_path / "t", ours, 4)
    assert load_hash_table(tmp_path / "t", ours, 4).tolist() == [4] * 7
    with pytest.raises(HashTableError, match="another tokenizer"):
        load_hash_table(tmp_path / "t", theirs, 4)
    with pytest.raises(HashTableError, match="built for 4 layers, the model has 6"):
        load_hash_table(tmp_path / "t", ours, 6)


def test_random_incons_loads_its_inference_table_only_at_inference(tmp_path):
    tok = tokenizer(["good"])
    other = torch.tensor([4, 4, 4, 4, 4, 1])
    write_table(tmp_path / "t", tok, 4, inference=other)
    assert load_hash_table(tmp_path / "t", tok, 4).tolist() == [4] * 6
    assert load_hash_table(tmp_path / "t", tok, 4, inference=True).tolist() == other.tolist()
