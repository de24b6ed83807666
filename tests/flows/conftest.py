"""Shared integration fixtures: a tiny saved backbone, tiny SST-2-like data, a project folder."""

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot", "the", "a", "was", "very"]


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # a loaded 2-core CI machine can be slow
        yield


def make_backbone(path: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

    path.mkdir(parents=True)
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizer(vocab=vocab).save_pretrained(path)  # transformers 5: vocab as a dict, not vocab_file
    assert AutoTokenizer.from_pretrained(path)("the movie was good")["input_ids"] == [2, 13, 11, 15, 5, 3]
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64)
    torch.manual_seed(0)  # the same tiny backbone in every test run
    BertModel(config).save_pretrained(path)


def make_sst2(src: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    for split, n in (("train", 48), ("dev", 16), ("test", 16)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            word = rng.choice(WORDS[:3] if label else WORDS[3:6])
            lines.append(" ".join(["the", rng.choice(WORDS[6:8]), "was", word]) + f"\t{label}")
        (src / "sst2").mkdir(parents=True, exist_ok=True)
        (src / "sst2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture()
def project(tmp_path):
    make_backbone(tmp_path / "backbone")
    make_sst2(tmp_path / "src")
    params = {
        "data": {"source_dir": "src", "tasks": ["sst2"]},
        "backbone": {"name": str(tmp_path / "backbone"), "attn_implementation": "eager", "max_length": 16},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "pooling": "mean"},
        "hashee": {"buckets": 3},
        "evaluate": {"sweep_points": 5, "timing_rows": 8, "timing_repeats": 1, "timing_batch_sizes": [1, 4]},
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "test-spine", "registered_model": "tiny-exits"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    return tmp_path




CHAT_TEMPLATE = ("{% for m in messages %}<|user|> {{ m['content'] }} <|end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_decoder(path: Path, chat_template: bool = True, layers: int = 4) -> Path:
    """A tiny Llama causal LM with a word-level tokenizer (vocab: WORDS + a few more), saved
    like a hub checkpoint; ``chat_template=False`` saves the tokenizer without one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True)
    words = ["<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>", *WORDS, "review", "movie:", "scene", "sentence",
             "describe", "summarize", "this", "in", "one", "is", "it", "positive", "or", "negative", "?", ":", ".", ","]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<|end|>")
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.3, pad_token_id=0, eos_token_id=2, bos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(path)
    return path
