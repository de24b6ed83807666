"""Tiny random HF encoders built in code (no downloads), one per supported family."""

from __future__ import annotations

import os

# Before torch is imported: one intra-op thread per test process (subprocesses inherit it). Tiny
# models gain nothing from threads, and the suite's two workers (pytest -n 2, pyproject.toml) on a
# 2-core machine with two threads each wait on each other (seen: a 4 s test module took 98 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertModel,
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    RobertaConfig,
    RobertaModel,
)

from models.exiting import MultiExitConfig, MultiExitModel

VOCAB = 99


def tiny_backbone(family: str = "bert", layers: int = 3, attn: str = "eager", seed: int = 0):
    """A tiny random encoder: hidden 32, 4 heads, FFN 37, vocab 99."""
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    if family == "bert":
        model = BertModel(BertConfig(**common))
    elif family == "roberta":
        model = RobertaModel(RobertaConfig(**common, pad_token_id=1))
    elif family == "electra":
        model = ElectraModel(ElectraConfig(**common, embedding_size=16))
    elif family == "albert":
        model = AlbertModel(AlbertConfig(**common, embedding_size=16, num_hidden_groups=1))
    elif family == "distilbert":
        model = DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=layers, n_heads=4, hidden_dim=37,
                                                 max_position_embeddings=64, dropout=0.0, attention_dropout=0.0))
    else:
        raise ValueError(family)
    model.config._attn_implementation = attn
    return model.eval()


def tiny_model(family="bert", layers=3, num_outputs=3, head="linear", lte=False, regression=False, seed=0, attn="eager"):
    backbone = tiny_backbone(family, layers, attn, seed)
    torch.manual_seed(seed + 1)
    config = MultiExitConfig(num_outputs=1 if regression else num_outputs, regression=regression, head=head,
                             head_dropout=0.0, scorer="lte" if lte else None)
    return MultiExitModel(backbone, config).eval()


def tiny_batch(batch=6, max_len=9, seed=0, labels=3, regression=False):
    """Right-padded random ids with varying lengths (>= 2), [CLS]-like id 2 first."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, max_len + 1, (batch,), generator=g)
    lengths[0] = max_len
    ids = torch.randint(5, VOCAB, (batch, max_len), generator=g)
    ids[:, 0] = 2
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    y = torch.rand(batch, generator=g) * 5 if regression else torch.randint(0, labels, (batch,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": y}


FAMILIES = ["bert", "roberta", "electra", "albert", "distilbert"]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param
