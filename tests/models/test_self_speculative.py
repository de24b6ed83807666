"""Self-speculative decoding: token identity with full-depth greedy decoding, per-row acceptance,
cache rollback, draft heads, bad input.

Tiny random Llama and Qwen2 decoders built in code (``tests/models/test_generation.py``); the
reference is full-depth greedy decoding of the same weights (``generate`` with every token at
layer L, itself tested equal to HF ``generate()``).
"""

import math
from pathlib import Path

import pytest
import torch

from config.params import ConfigError, load_params
from models.adapters.decoder import DecoderAdapter
from models.generation import DecoderExits, GenerationError, StaticExit, exit_points, generate
from models.self_speculative import (
    DraftHead,
    check_speculative,
    decode_self_speculative,
    frequent_tokens,
    sweep_draft_settings,
)
from tests.models.test_generation import EOS, PAD, tiny_lm, tiny_qwen2

LAYERS = 6
ROOT = Path(__file__).resolve().parents[2]


def ragged_prompts(rows: int = 8, width: int = 9, seed: int = 1):
    """Left-padded prompts of lengths 2..width (row 0 the longest): ``ids, padding [rows, width]``."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, width + 1, (rows,), generator=g)
    lengths[0] = width
    padding = (torch.arange(width)[None] >= (width - lengths)[:, None]).long()
    ids = torch.randint(3, 61, (rows, width), generator=g) * padding
    return ids, padding


def full_depth(adapter, ids, padding, max_new, eos, keep_cache=False):
    exits = DecoderExits(adapter, [adapter.num_layers], exit_head="shared", policy=False)
    return generate(exits, StaticExit(adapter.num_layers), ids, padding, max_new, eos, PAD, keep_cache=keep_cache)


def stop_token(reference) -> int:
    """A token the reference emits mid-way in row 0: as the end token, some rows end early."""
    return int(reference.tokens[0, 4])


def assert_valid_cache_equal(plain, spec, rows_equal_masks: bool):
    """Keys/values of every layer equal at plain decoding's valid slots; with ``rows_equal_masks``
    the valid slots are the same too, else speculative decoding may hold up to d more (the
    accepted drafts of its last step, past the cut at max_new_tokens)."""
    a, b = plain.extra["cache"], spec.extra["cache"]
    width = a.valid.shape[1]
    if rows_equal_masks:
        assert torch.equal(b.valid[:, :width], a.valid) and not b.valid[:, width:].any()
    else:
        assert (b.valid[:, :width] | ~a.valid).all()  # a superset
    slots = a.valid  # [b, t]
    for layer in range(a.keys.shape[0]):
        torch.testing.assert_close(b.keys[layer, :, :, :width].transpose(1, 2)[slots],
                                   a.keys[layer].transpose(1, 2)[slots], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.values[layer, :, :, :width].transpose(1, 2)[slots],
                                   a.values[layer].transpose(1, 2)[slots], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [tiny_lm, tiny_qwen2])
def test_tokens_equal_full_depth_greedy_at_batch_8_and_batch_1(make):
    adapter = DecoderAdapter(make(layers=LAYERS))
    ids, padding = ragged_prompts()
    max_new = 16
    end = stop_token(full_depth(adapter, ids, padding, max_new, [-1]))
    reference = full_depth(adapter, ids, padding, max_new, [end])
    lengths = reference.lengths.tolist()
    assert min(lengths) < max_new and max(lengths) == max_new  # rows end early, others run to the limit
    rates = []
    for draft_layer, draft_length in [(1, 1), (2, 4), (LAYERS - 1, 3)]:
        out = decode_self_speculative(adapter, ids, padding, draft_layer, draft_length, max_new, [end], PAD)
        assert out.sequences() == reference.sequences(), (draft_layer, draft_length)
        assert torch.equal(out.tokens, reference.tokens)  # pad after each row's end as well
        rates.append(out.stats()["acceptance_rate"])
        for row in (0, 3, 7):  # batch 1: the row's prompt alone, without padding
            keep = padding[row].bool()
            alone = decode_self_speculative(adapter, ids[row:row + 1, keep], padding[row:row + 1, keep], draft_layer,
                                            draft_length, max_new, [end], PAD)
            assert alone.sequences()[0] == reference.sequences()[row]
            assert alone.accepted_per_step(0) == out.accepted_per_step(row)  # a row's acceptance is its own
    assert 0 < max(rates) and min(rates) < 1  # drafts are neither all rejected nor all accepted: the test has teeth


@pytest.mark.parametrize("make", [tiny_lm, tiny_qwen2])
def test_a_draft_that_is_always_right_accepts_every_draft(make):
    """Layers after E add nothing (zero attention output and MLP projections): the layer-E state
    is the final state, so every draft equals the verifier's token."""
    lm = make(layers=LAYERS)
    draft_layer, draft_length, max_new = 2, 3, 15
    with torch.no_grad():
        for layer in lm.model.layers[draft_layer:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    adapter = DecoderAdapter(lm)
    ids, padding = ragged_prompts()
    end = stop_token(full_depth(adapter, ids, padding, max_new, [-1]))
    reference = full_depth(adapter, ids, padding, max_new, [end])
    out = decode_self_speculative(adapter, ids, padding, draft_layer, draft_length, max_new, [end], PAD)
    assert out.sequences() == reference.sequences()
    for row, length in enumerate(reference.lengths.tolist()):
        steps = math.ceil((length - 1) / (draft_length + 1))  # d + 1 tokens per step, the last one cut
        assert out.accepted_per_step(row) == [draft_length] * steps
    stats = out.stats()
    assert stats["acceptance_rate"] == 1.0 and stats["mean_accepted"] == draft_length
    steps = int(out.steps.sum())
    assert stats["layer_passes_per_token"] == steps * (draft_length * draft_layer + LAYERS) / stats["decode_tokens"]
    assert stats["token_layers_per_token"] == steps * (draft_length + 1) * LAYERS / stats["decode_tokens"]


@pytest.mark.parametrize("make", [tiny_lm, tiny_qwen2])
def test_a_draft_that_is_always_wrong_rejects_every_draft_and_rolls_the_cache_back(make):
    """The draft head's vocabulary is one token the model never emits: each step accepts no draft,
    emits the verifier's token, and leaves the cache plain decoding leaves."""
    adapter = DecoderAdapter(make(layers=LAYERS))
    ids, padding = ragged_prompts()
    max_new = 12
    end = stop_token(full_depth(adapter, ids, padding, max_new, [-1]))
    reference = full_depth(adapter, ids, padding, max_new, [end], keep_cache=True)
    never = min(set(range(3, 61)) - set(reference.tokens.flatten().tolist()))
    head = DraftHead(adapter, vocab=torch.tensor([never]))
    out = decode_self_speculative(adapter, ids, padding, 3, 4, max_new, [end], PAD, head, keep_cache=True)
    assert out.sequences() == reference.sequences()
    for row, length in enumerate(reference.lengths.tolist()):
        assert out.accepted_per_step(row) == [0] * (length - 1)
    assert out.stats()["acceptance_rate"] == 0.0
    assert_valid_cache_equal(reference, out, rows_equal_masks=True)


@pytest.mark.parametrize("make", [tiny_lm, tiny_qwen2])
def test_cache_after_partial_acceptance_equals_plain_decoding(make):
    adapter = DecoderAdapter(make(layers=LAYERS))
    ids, padding = ragged_prompts()
    max_new = 14
    reference = full_depth(adapter, ids, padding, max_new, [-1], keep_cache=True)
    out = decode_self_speculative(adapter, ids, padding, 4, 3, max_new, [-1], PAD, keep_cache=True)
    assert out.sequences() == reference.sequences()
    accepted = out.accepted[out.accepted >= 0]
    assert (accepted == 0).any() and (accepted > 0).any()  # rejections and acceptances both happened
    assert_valid_cache_equal(reference, out, rows_equal_masks=False)
    extra = out.extra["cache"].valid.sum(-1) - reference.extra["cache"].valid.sum(-1)
    assert ((extra >= 0) & (extra <= 3)).all()


def test_rows_that_end_at_their_first_token_and_a_one_token_budget():
    adapter = DecoderAdapter(tiny_lm(layers=LAYERS))
    ids, padding = ragged_prompts()
    first = full_depth(adapter, ids, padding, 1, [-1]).tokens[:, 0]
    end = int(first[0])  # row 0 (and any row sharing its first token) ends at once
    reference = full_depth(adapter, ids, padding, 10, [end])
    out = decode_self_speculative(adapter, ids, padding, 2, 3, 10, [end], PAD)
    assert out.sequences() == reference.sequences() and out.lengths[0] == 1 and out.steps[0] == 0
    assert out.lengths.max() > 1
    one = decode_self_speculative(adapter, ids, padding, 2, 3, 1, [EOS], PAD)
    assert torch.equal(one.tokens[:, 0], first) and (one.steps == 0).all()


def test_reduced_vocabulary_and_trained_exit_drafts_stay_lossless():
    adapter = DecoderAdapter(tiny_lm(layers=LAYERS))
    ids, padding = ragged_prompts()
    reference = full_depth(adapter, ids, padding, 12, [EOS])
    vocab = frequent_tokens(reference.sequences(), 10, always=[EOS])
    assert vocab[0] == EOS and len(vocab) == 10 and len(set(vocab.tolist())) == 10
    head = DraftHead(adapter, vocab=vocab)
    states = torch.randn(5, adapter.hidden_size)
    full_logits = adapter.lm_logits(adapter.final_norm(states))
    expected = vocab[full_logits[:, vocab].argmax(-1)]
    assert torch.equal(head(states), expected) and head.vocab_share == 10 / adapter.vocab_size
    exits = DecoderExits(adapter, exit_points(2, LAYERS), exit_head="affine", policy=False)
    with torch.no_grad():
        for p in exits.translators.parameters():
            p.normal_(0, 0.3)
    for draft in (head, DraftHead.from_exits(exits, 2), DraftHead.from_exits(exits, 4, vocab)):
        out = decode_self_speculative(adapter, ids, padding, 2 if draft is not head else 3, 2, 12, [EOS], PAD, draft)
        assert out.sequences() == reference.sequences()
    with pytest.raises(GenerationError, match="generate.speculative.draft_layer: 3 is not one of the trained exit points"):
        DraftHead.from_exits(exits, 3)


def test_frequent_tokens_order():
    assert frequent_tokens([[5, 6, 6, 7], [7, 6, 9]], 3).tolist() == [6, 7, 5]  # 6: 3x, 7: 2x, then 5 before 9
    assert frequent_tokens([[5, 5]], 3, always=[2]).tolist() == [2, 5]


def test_sweep_ranks_settings_by_layer_cost():
    lm = tiny_lm(layers=LAYERS)
    with torch.no_grad():  # an always-right draft from layer 2: drafting more per step is cheaper per token
        for layer in lm.model.layers[2:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    adapter = DecoderAdapter(lm)
    ids, padding = ragged_prompts(rows=4)
    rows = sweep_draft_settings(adapter, [(ids, padding)], [2], [1, 4], 10, [-1], PAD, position_cost=0.0)
    assert [(r["draft_layer"], r["draft_length"]) for r in rows] == [(2, 4), (2, 1)]
    assert all(r["acceptance_rate"] == 1.0 for r in rows)
    assert rows[0]["relative_cost"] < rows[1]["relative_cost"]


def test_bad_draft_settings_name_the_key():
    with pytest.raises(GenerationError, match=r"generate.speculative.draft_layer: 0 is outside 1..5"):
        check_speculative(0, 2, 6)
    with pytest.raises(GenerationError, match=r"generate.speculative.draft_layer: 6 is outside 1..5"):
        check_speculative(6, 2, 6)
    with pytest.raises(GenerationError, match=r"generate.speculative.draft_length: must be >= 1"):
        check_speculative(3, 0, 6)
    adapter = DecoderAdapter(tiny_lm(layers=LAYERS))
    ids, padding = ragged_prompts(rows=2)
    with pytest.raises(GenerationError, match="draft_layer"):
        decode_self_speculative(adapter, ids, padding, LAYERS, 2, 4, [EOS], PAD)
    with pytest.raises(ConfigError, match=r"generate.speculative.draft_length: Input should be greater than or equal to 1"):
        load_params(ROOT / "params.yaml", ["generate.speculative.draft_length=0"])
    with pytest.raises(ConfigError, match=r"generate.speculative.draft_layer: Input should be greater than or equal to 1"):
        load_params(ROOT / "params.yaml", ["generate.speculative.draft_layer=0"])
    assert load_params(ROOT / "params.yaml", ["generate.speculative.draft_layer=10"]).generate.speculative.draft_layer == 10
