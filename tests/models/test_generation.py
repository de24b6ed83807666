"""Decoder early exit: state copying, per-row batched exits, criteria, FLOPs, policy training.

Tiny random Llama-layout models built in code (hidden 32, GQA 4 heads / 2 kv heads).
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from models.adapters.decoder import DecoderAdapter, apply_rope
from models.consistentee import sample_trajectories
from models.generation import (
    DecoderExits,
    GenerationError,
    HiddenSaturation,
    PolicyExit,
    SoftmaxResponse,
    StaticExit,
    collect_exit_states,
    decode_token_flops,
    exit_norm_step_loss,
    exit_points,
    exit_probabilities,
    full_depth_decode_flops,
    generate,
    memorized_exit_layer,
    point_losses,
    policy_step_loss,
    weighted_exit_loss,
)

EOS, PAD = 2, 0


def tiny_lm(layers: int = 4, seed: int = 0, vocab: int = 61) -> LlamaForCausalLM:
    """Large init so greedy tokens vary (a small-init random LM repeats one token)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, initializer_range=0.3, bos_token_id=1, eos_token_id=EOS,
                      pad_token_id=PAD, attn_implementation="eager")
    lm = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-unit norm gains, so a gain folded along the wrong axis shows
        for layer in lm.model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
        lm.model.norm.weight.uniform_(0.5, 1.5)
    return lm


def tiny_qwen2(layers: int = 4, seed: int = 0):
    """A tiny Qwen2: the Llama layout with biases on q/k/v."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.3,
                      bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD, attn_implementation="eager")
    lm = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in lm.model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            for proj in (layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return lm


def prompts():
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [3, 4, 5, 9, 10, 11], [0, 0, 0, 12, 13, 14]])
    return ids, (ids != PAD).long()


def test_full_depth_equals_hf_generate_token_for_token():
    lm = tiny_lm()
    exits = DecoderExits(DecoderAdapter(lm), exit_points(2, 4))
    ids, pad = prompts()
    ours = generate(exits, StaticExit(4), ids, pad, 10, [EOS], PAD)
    hf = lm.generate(input_ids=ids, attention_mask=pad, max_new_tokens=10, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    theirs = hf[:, ids.shape[1]:]
    assert len({tuple(r) for r in ours.tokens.tolist()}) == 3 and len(set(ours.tokens[0].tolist())) > 2  # non-trivial
    for row, seq in enumerate(ours.sequences()):
        assert seq == theirs[row, : len(seq)].tolist()
    assert (ours.exit_layers[ours.exit_layers > 0] == 4).all()


@pytest.mark.parametrize("make", [tiny_lm, tiny_qwen2])
def test_skipped_layers_get_the_projections_of_the_copied_state(make):
    lm = make()
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, exit_points(1, 4))
    ids = torch.tensor([[3, 4, 5, 9]])
    out = generate(exits, StaticExit(2), ids, torch.ones_like(ids), 2, [EOS], PAD, keep_cache=True)
    cache, slot = out.extra["cache"], ids.shape[1]  # slot of the first decoded token's input
    first = out.tokens[0, 0]
    # the state after layer 2 of that token: layers 1..2 saw an exact prompt cache
    full = lm(torch.cat([ids, first.view(1, 1)], 1), output_hidden_states=True)
    state = full.hidden_states[2][:, -1:]  # [1, 1, d]
    position = torch.tensor([[ids.shape[1]]])
    cos, sin = lm.model.rotary_emb(state, position)
    for j in (2, 3):  # 0-based layers 3 and 4 were skipped
        layer = lm.model.layers[j]
        x = layer.input_layernorm(state)
        k = layer.self_attn.k_proj(x).view(1, 1, 2, 8).transpose(1, 2)
        v = layer.self_attn.v_proj(x).view(1, 1, 2, 8).transpose(1, 2)
        torch.testing.assert_close(cache.keys[j, 0, :, slot], apply_rope(k, cos, sin)[0, :, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cache.values[j, 0, :, slot], v[0, :, 0], atol=1e-5, rtol=1e-5)
    # layers that ran keep their own entries, which differ from a copy
    layer = lm.model.layers[1]
    k_own = layer.self_attn.k_proj(layer.input_layernorm(full.hidden_states[1][:, -1:])).view(1, 1, 2, 8).transpose(1, 2)
    torch.testing.assert_close(cache.keys[1, 0, :, slot], apply_rope(k_own, cos, sin)[0, :, 0], atol=1e-5, rtol=1e-5)
    assert (out.exit_layers[0, 1:out.lengths[0]] == 2).all()


@pytest.mark.parametrize("make", [tiny_lm, tiny_qwen2])
def test_forced_exit_matches_a_reference_that_recomputes_copied_layers(make):
    """Static exit at k over several steps equals a plain loop that, per token, runs layers
    1..k and writes layers k+1..L from the layer-k state (an independent reimplementation)."""
    lm = make()
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, exit_points(1, 4))
    ids = torch.tensor([[3, 4, 5, 9]])
    out = generate(exits, StaticExit(2), ids, torch.ones_like(ids), 6, [EOS], PAD)
    # reference with HF's DynamicCache: keys/values appended per layer
    from transformers import DynamicCache
    cache = DynamicCache(config=lm.config)
    with torch.no_grad():
        res = lm(ids, past_key_values=cache, use_cache=True)
        token = res.logits[0, -1].argmax()
        expected = [int(token)]
        for i in range(5):
            pos = torch.tensor([[ids.shape[1] + i]])
            h = lm.model.embed_tokens(token.view(1, 1))
            cos, sin = lm.model.rotary_emb(h, pos)
            for j, layer in enumerate(lm.model.layers):
                if j < 2:
                    h = layer(h, position_embeddings=(cos, sin), past_key_values=cache, attention_mask=None)
                    if isinstance(h, tuple):
                        h = h[0]
                    exit_state = h
                else:  # copy: k/v of the layer-2 state, appended to this layer's cache
                    xs = layer.input_layernorm(exit_state)
                    k = layer.self_attn.k_proj(xs).view(1, 1, 2, 8).transpose(1, 2)
                    v = layer.self_attn.v_proj(xs).view(1, 1, 2, 8).transpose(1, 2)
                    cache.update(apply_rope(k, cos, sin), v, j)
            token = lm.lm_head(lm.model.norm(exit_state))[0, -1].argmax()
            expected.append(int(token))
            if token == EOS:
                break
    assert out.sequences()[0] == expected[: out.lengths[0]]


@pytest.mark.parametrize("criterion", [SoftmaxResponse(0.2), HiddenSaturation(0.6), PolicyExit(0.5), StaticExit(3)])
def test_batched_rows_equal_each_row_alone(criterion):
    lm = tiny_lm()
    exits = DecoderExits(DecoderAdapter(lm), exit_points(1, 4))
    torch.manual_seed(3)
    for p in exits.policy.parameters():
        p.data.normal_(0, 1.0)
    ids, pad = prompts()
    batched = generate(exits, criterion, ids, pad, 8, [EOS], PAD)
    layers = set()
    for row in range(ids.shape[0]):
        keep = pad[row].bool()
        alone = generate(exits, criterion, ids[row:row + 1, keep], pad[row:row + 1, keep], 8, [EOS], PAD)
        assert alone.sequences()[0] == batched.sequences()[row]
        n = alone.lengths[0]
        assert alone.exit_layers[0, :n].tolist() == batched.exit_layers[row, :n].tolist()
        assert alone.decode_flops[0] == batched.decode_flops[row]
        layers |= set(alone.exit_layers[0, 1:n].tolist())
    if not isinstance(criterion, StaticExit):
        assert len(layers) > 1, f"{criterion}: every token exited at the same layer; the test would not show per-row exits"


def test_criteria_decide_as_named():
    lm = tiny_lm()
    exits = DecoderExits(DecoderAdapter(lm), exit_points(1, 4))
    from models.generation import ExitContext
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    prev = torch.tensor([[1.0, 0.0], [1.0, -1.0]])
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    ctx = ExitContext(0, 1, h, h, prev, logits, exits)
    assert SoftmaxResponse(0.5).fires(ctx).tolist() == [True, False]  # 0.5 >= 0.5; 0.05 < 0.5
    assert HiddenSaturation(0.99).fires(ctx).tolist() == [True, False]  # cos 1 and cos 0
    assert StaticExit(2).fires(ctx).tolist() == [False, False]


def test_decode_flops_equal_flop_counter():
    lm = tiny_lm()
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, exit_points(1, 4))
    ids = torch.tensor([[3, 4, 5, 9, 10], [6, 7, 8, 11, 12]])  # equal lengths: no padding slots
    pad = torch.ones_like(ids)
    for criterion in (SoftmaxResponse(0.2), PolicyExit(0.5), HiddenSaturation(0.6), StaticExit(4)):
        # the math SDPA backend decomposes into matmuls FlopCounterMode sees (the fused CPU kernel is not counted)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as prefill_only:
            generate(exits, criterion, ids, pad, 1, [-1], PAD)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            out = generate(exits, criterion, ids, pad, 7, [-1], PAD)
        assert len(set(out.exit_layers[:, 1:].flatten().tolist())) > 1 or isinstance(criterion, StaticExit)
        assert counter.get_total_flops() - prefill_only.get_total_flops() == int(out.decode_flops.sum()), criterion
    full = generate(exits, StaticExit(4), ids, pad, 7, [-1], PAD)
    assert full.decode_flops.tolist() == full_depth_decode_flops(adapter, pad.sum(-1), full.decode_tokens).tolist()


def test_decode_token_flops_by_hand():
    lm = tiny_lm()
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, [2, 4])
    layer = adapter.layer_flops(torch.tensor([10]))
    lm_head, copy, affine = adapter.lm_head_flops(), adapter.copy_flops(), 2 * 32 * 32
    got = decode_token_flops(exits, SoftmaxResponse(0.5), torch.tensor([4]), torch.tensor([10]))
    assert int(got) == int(4 * layer + 2 * lm_head + affine)  # LM head at both points, translator at point 1
    got = decode_token_flops(exits, HiddenSaturation(0.5), torch.tensor([2]), torch.tensor([10]))
    assert int(got) == int(2 * layer + 2 * copy + lm_head + affine)
    got = decode_token_flops(exits, HiddenSaturation(0.5), torch.tensor([4]), torch.tensor([10]))
    assert int(got) == int(4 * layer + lm_head)  # no translator: it exits at L only
    policy = exits.policy.flops_at(1, 2)
    got = decode_token_flops(exits, PolicyExit(0.5), torch.tensor([4]), torch.tensor([10]))
    assert int(got) == int(4 * layer + lm_head + policy + affine)  # one decision (none at L)


def test_exit_points_and_bad_input():
    assert exit_points(5, 30) == [5, 10, 15, 20, 25, 30]
    assert exit_points(4, 30)[-1] == 30 and exit_points(4, 30)[-2] == 28
    assert exit_points("all", 3) == [1, 2, 3]
    assert exit_points([3, 1], 4) == [1, 3, 4]
    with pytest.raises(GenerationError, match=r"\[0, 31\] are outside 1\.\.30"):
        exit_points([0, 5, 31], 30)
    with pytest.raises(ValueError, match="not a causal LM"):
        DecoderAdapter(BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)))


def test_weighted_loss_and_exit_norm_training_leave_the_model_alone():
    lm = tiny_lm()
    adapter = DecoderAdapter(lm)
    assert sum(p.numel() for p in DecoderExits(adapter, [2, 4], exit_head="norm", policy=False).parameters()) == 32
    assert sum(p.numel() for p in DecoderExits(adapter, [2, 4], exit_head="shared", policy=False).parameters()) == 0
    exits = DecoderExits(adapter, [2, 4], policy=False)  # affine: identity at init
    torch.testing.assert_close(exits.normed(0, torch.ones(3, 32) * 2), lm.model.norm(torch.ones(3, 32) * 2))
    ids = torch.tensor([[3, 4, 5, 9, 10, 11, 12]])
    predicts = torch.ones_like(ids)
    predicts[0, -1] = 0
    states = collect_exit_states(exits, ids, torch.ones_like(ids), predicts)  # [2, 6, d]
    full = lm(ids, output_hidden_states=True)
    torch.testing.assert_close(states[0], full.hidden_states[2][0, :-1], atol=1e-5, rtol=1e-5)
    targets = ids[0, 1:]
    ce = [torch.nn.functional.cross_entropy(exits.logits(p, states[p]), targets) for p in range(2)]
    torch.testing.assert_close(weighted_exit_loss(exits, states, targets), (2 * ce[0] + 4 * ce[1]) / 6)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    trainable = [p for p in exits.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 32 + 32 * 32 + 32  # one exit's norm + W, b; the last point is the model's
    opt = torch.optim.Adam(trainable, lr=0.05)
    start = weighted_exit_loss(exits, states, targets).item()
    for _ in range(30):
        opt.zero_grad()
        weighted_exit_loss(exits, states, targets).backward()
        opt.step()
    assert weighted_exit_loss(exits, states, targets).item() < start - 0.05
    for k, v in lm.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_policy_step_moves_only_the_policy_and_uses_layer_numbers():
    lm = tiny_lm()
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, [2, 4])
    states = torch.randn(2, 5, 32)
    losses = torch.zeros(2, 5)
    # with zero CE, rewards are -alpha * layer: exit layer 2 -> -0.2, layer 4 -> -0.4 (alpha 0.1)
    loss, info = policy_step_loss(exits, states, losses, copies=4, alpha=0.1, epsilon=0.0, generator=torch.Generator().manual_seed(0))
    assert info["reward"] == pytest.approx(-0.1 * info["exit_layer"])
    assert 2.0 <= info["exit_layer"] <= 4.0  # layer numbers, not point indices (1, 2)
    # hardness reward (Eq. 4): memorized layer M = L removes the depth penalty entirely
    _, hard = policy_step_loss(exits, states, losses, 4, 0.1, 0.0, memorized=torch.full((5,), 4),
                               generator=torch.Generator().manual_seed(0))
    assert hard["reward"] == pytest.approx(0.0)
    _, half = policy_step_loss(exits, states, losses, 4, 0.1, 0.0, memorized=torch.full((5,), 2),
                               generator=torch.Generator().manual_seed(0))
    assert half["reward"] == pytest.approx(-0.1 * 0.5 * half["exit_layer"])
    loss.backward()
    grads = {n for n, p in exits.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("policy.") for n in grads)
    # REINFORCE pushes pi(exit at layer 2) up when the early exit costs nothing more
    opt = torch.optim.SGD(exits.policy.parameters(), lr=1.0)
    before = exits.policy(1, exits.normed(0, states[0])).mean().item()
    for _ in range(20):
        opt.zero_grad()
        policy_step_loss(exits, states, losses, 4, 0.1, 0.0, generator=torch.Generator().manual_seed(1))[0].backward()
        opt.step()
    assert exits.policy(1, exits.normed(0, states[0])).mean().item() > before + 0.1


def test_memorized_exit_layer_maps_points_to_layers():
    exits = DecoderExits(DecoderAdapter(tiny_lm()), [2, 4])
    correct = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    assert memorized_exit_layer(exits, correct).tolist() == [2, 4, 4]


def test_exit_norm_step_trains_each_token_at_its_sampled_point():
    lm = tiny_lm()
    exits = DecoderExits(DecoderAdapter(lm), [2, 4])
    for p in exits.policy.parameters():
        p.data.zero_()
    exits.policy.nets[0][2].bias.data.fill_(-50.0)  # pi = 0 at layer 2: every token exits at 4
    states = torch.randn(2, 6, 32, requires_grad=False)
    targets = torch.randint(0, 61, (6,))
    loss = exit_norm_step_loss(exits, states, targets)
    expected = torch.nn.functional.cross_entropy(exits.logits(1, states[1]), targets)
    torch.testing.assert_close(loss, expected)
    exits.policy.nets[0][2].bias.data.fill_(50.0)  # pi = 1 at layer 2: every token exits there
    torch.testing.assert_close(exit_norm_step_loss(exits, states, targets),
                               torch.nn.functional.cross_entropy(exits.logits(0, states[0]), targets))
    exits.policy.nets[0][0].weight.data.normal_(0, 1.0)  # mixed: pi depends on the state
    exits.policy.nets[0][2].weight.data.normal_(0, 3.0)
    exits.policy.nets[0][2].bias.data.zero_()
    point, _ = sample_trajectories(exit_probabilities(exits, states), 0.0, torch.Generator().manual_seed(5))
    assert 0 < (point == 1).sum() < 6
    by_point = [torch.nn.functional.cross_entropy(exits.logits(p, states[p]), targets, reduction="none") for p in (0, 1)]
    expected = torch.where(point == 1, by_point[0], by_point[1]).mean()
    torch.testing.assert_close(exit_norm_step_loss(exits, states, targets, torch.Generator().manual_seed(5)), expected)
    losses, correct = point_losses(exits, states, targets, chunk=4)
    torch.testing.assert_close(losses[1], torch.nn.functional.cross_entropy(exits.logits(1, states[1]), targets, reduction="none"))
    assert correct.shape == (2, 6)


def test_a_row_that_ends_early_leaves_the_others_unchanged():
    lm = tiny_lm()
    exits = DecoderExits(DecoderAdapter(lm), exit_points(1, 4))
    ids, pad = prompts()
    criterion = SoftmaxResponse(0.2)
    first = generate(exits, criterion, ids, pad, 8, [-1], PAD)
    end = int(first.tokens[0, 2])  # row 0 emits this at its third token: make it the end token
    out = generate(exits, criterion, ids, pad, 8, [end], PAD, keep_cache=True)
    n0 = int(out.lengths[0])
    assert n0 == first.tokens[0].tolist().index(end) + 1 <= 3
    assert (out.tokens[0, n0:] == PAD).all() and (out.exit_layers[0, n0:] == 0).all()
    s = ids.shape[1]
    assert not out.extra["cache"].valid[0, s + n0 - 1:].any()  # no slot after its end token was written
    assert out.decode_tokens[0] == n0 - 1
    for row in (1, 2):
        keep = pad[row].bool()
        alone = generate(exits, criterion, ids[row:row + 1, keep], pad[row:row + 1, keep], 8, [end], PAD)
        assert alone.sequences()[0] == out.sequences()[row]
        assert alone.decode_flops[0] == out.decode_flops[row]
