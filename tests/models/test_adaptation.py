"""Backbone adaptation and exit distillation (issue 22 items 1-3) on tiny Llama / Qwen2 decoders built in code.

The early-exit loss against a hand computation, LayerSkip's layer-dropout schedule, distillation
raising held-out exit agreement, LoRA training only LoRA and exit weights, full adaptation on
self-distilled targets keeping the full-depth model, and the bad-input errors.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from models.adapters.decoder import DecoderAdapter
from models.adaptation import (
    AdaptationError,
    AdaptTraining,
    DistillSet,
    active_exits,
    add_lora,
    check_adaptation,
    early_exit_loss,
    evaluate_exits,
    exit_weights,
    layer_dropout_rates,
    run_layers,
    train_exits_and_backbone,
)
from models.distillation import TeacherTargets, top_k_kl, top_k_targets
from models.generation import DecoderExits
from tests.models.test_generation import tiny_lm, tiny_qwen2

LAYERS = 4


def teacher_set(lm, sequences: int, length: int, seed: int, k: int = 8) -> DistillSet:
    """Random sequences (lengths length//2..length) with ``lm``'s own top-k distributions as the teacher."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 2, length + 1, (sequences,), generator=g)
    ids = torch.randint(3, lm.config.vocab_size, (int(lengths.sum()),), generator=g)
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, [adapter.num_layers], exit_head="shared", policy=False)
    data = DistillSet(ids, lengths)
    tops = []
    with torch.no_grad():
        for batch_ids, padding, _, _ in data.batches(64):
            states = run_layers(adapter, batch_ids, padding, [adapter.num_layers])
            tops.append(top_k_targets(exits.logits(0, states[adapter.num_layers][padding.bool()]), k))
    return DistillSet(ids, lengths, TeacherTargets(torch.cat([t.top_ids for t in tops]), torch.cat([t.top_logprobs for t in tops])))


def settings(**changes) -> AdaptTraining:
    base = dict(epochs=1, lr=1e-3, exit_lr=1e-2, weight_decay=0.0, batch_sequences=8, p_max=0.0, exit_scale=1.0,
                curriculum="all", rotation=2, train_backbone=True)
    return AdaptTraining(**(base | changes))


def test_top_k_kl_is_the_full_kl_when_k_is_the_vocabulary_and_zero_on_the_teacher():
    g = torch.Generator().manual_seed(0)
    teacher_logits, student_logits = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    full = top_k_targets(teacher_logits, 11)
    expected = F.kl_div(F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1), log_target=True,
                        reduction="none").sum(-1)
    assert torch.allclose(top_k_kl(student_logits, full, reduction="none"), expected, atol=1e-5)
    partial = top_k_targets(teacher_logits, 3)
    assert top_k_kl(teacher_logits, partial).abs() < 1e-5  # the teacher itself: no divergence
    p, q = torch.softmax(teacher_logits, -1), torch.softmax(student_logits, -1)
    top = p.topk(3, -1).indices
    p_top, q_top = p.gather(1, top), q.gather(1, top)
    rest_p, rest_q = 1 - p_top.sum(-1), 1 - q_top.sum(-1)  # the k + 1-th bucket
    by_hand = (p_top * (p_top / q_top).log()).sum(-1) + rest_p * (rest_p / rest_q).log()
    assert torch.allclose(top_k_kl(student_logits, partial, reduction="none"), by_hand, atol=1e-5)


def test_early_exit_loss_equals_a_hand_computation():
    lm = tiny_lm(LAYERS)
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, [2, 4], exit_head="norm", policy=False)
    data = teacher_set(tiny_lm(LAYERS, seed=5), 3, 6, seed=1, k=lm.config.vocab_size)  # another model as the teacher
    ids, padding, teacher, _ = next(data.batches(8))
    states = {k: v[padding.bool()] for k, v in run_layers(adapter, ids, padding, [2, 4]).items()}
    weights = exit_weights([2, 4], LAYERS, 0.5, [True, True])
    assert torch.allclose(weights, torch.tensor([0.5 * 2 / 4, 1.0]) / 1.25)
    loss, _ = early_exit_loss(exits, states, teacher, weights)
    p = torch.zeros(len(teacher.top_ids), lm.config.vocab_size).scatter(1, teacher.top_ids, teacher.top_logprobs.exp())
    by_hand = 0.0
    for w, h, norm in ((0.2, states[2], exits.translators[0].norm), (0.8, states[4], lm.model.norm)):
        q = torch.softmax(lm.lm_head(norm(h)), -1)
        by_hand += w * (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(loss, by_hand, atol=1e-5)


def test_layer_dropout_schedule_and_curriculum():
    rates = layer_dropout_rates(8, 0.2)
    assert rates[0] == 0 and math.isclose(rates[-1].item(), 0.2, rel_tol=1e-6)
    assert (rates.diff() > 0).all()  # rising with depth
    assert active_exits(4, 0, "rotational", 2) == [True, False, True, True]
    assert active_exits(4, 1, "rotational", 2) == [False, True, False, True]
    assert active_exits(4, 1, "all", 2) == [True] * 4
    assert exit_weights([1, 2, 4], 4, 1.0, [False, True, True]).tolist() == pytest.approx([0, 1 / 3, 2 / 3])


def test_layer_dropout_is_off_in_eval_and_a_dropped_layer_is_the_identity_for_its_sample():
    lm = tiny_lm(LAYERS)
    adapter = DecoderAdapter(lm)
    ids, padding = torch.randint(3, 61, (6, 7)), torch.ones(6, 7, dtype=torch.long)
    plain = run_layers(adapter, ids, padding, [1, 2, 3, 4])
    always = torch.ones(LAYERS)
    assert torch.equal(run_layers(adapter, ids, padding, [4], always)[4], plain[4])  # eval: no dropout
    lm.train()
    rates = torch.tensor([0.0, 0.5, 0.0, 0.0])
    g = torch.Generator().manual_seed(1)
    dropped = run_layers(adapter, ids, padding, [1, 2], rates, torch.Generator().manual_seed(1))
    skip = torch.rand(6, generator=g) < 0.5  # the draw run_layers makes for layer 2
    assert skip.any() and (~skip).any()
    assert torch.equal(dropped[2][skip], plain[1][skip])  # identity for the dropped samples
    assert torch.allclose(dropped[2][~skip], plain[2][~skip], atol=1e-6)


@pytest.mark.parametrize("build", [tiny_lm, tiny_qwen2])
def test_distillation_raises_held_out_exit_agreement(build):
    lm = build(LAYERS)
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, [1, 2, 4], exit_head="affine", policy=False)
    train, held = teacher_set(lm, 96, 10, seed=1), teacher_set(lm, 32, 10, seed=2)
    before = evaluate_exits(exits, held, 16)
    history = train_exits_and_backbone(exits, train, settings(epochs=6, train_backbone=False), torch.Generator().manual_seed(0))
    after = evaluate_exits(exits, held, 16)
    assert history and after["agreement"][-1] == before["agreement"][-1] == 1.0  # the frozen last layer is the teacher
    assert all(a > b for a, b in zip(after["agreement"][:2], before["agreement"][:2]))
    assert sum(after["agreement"][:2]) / 2 > sum(before["agreement"][:2]) / 2 + 0.05  # held-out tokens
    assert after["kl"][0] < before["kl"][0] and after["kl"][1] < before["kl"][1]


def test_lora_trains_only_lora_and_exit_weights():
    lm = tiny_lm(LAYERS)
    lm.requires_grad_(False)
    base = {k: v.clone() for k, v in lm.state_dict().items()}
    peft_lm = add_lora(lm, rank=4, alpha=8, targets=["q_proj", "v_proj"])
    assert any("lora_A" in name for name, _ in peft_lm.named_parameters())
    adapter = DecoderAdapter(lm)
    exits = DecoderExits(adapter, [2, 4], exit_head="affine", policy=False)
    translator = exits.translators[0].proj.weight.clone()
    data = teacher_set(tiny_lm(LAYERS, seed=7), 16, 8, seed=1)
    train_exits_and_backbone(exits, data, settings(p_max=0.2), torch.Generator().manual_seed(0))
    trained = {n for n, p in peft_lm.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in peft_lm.state_dict().items()
             if "lora_" not in k}
    assert all(torch.equal(after[k], v) for k, v in base.items())  # base weights unchanged
    assert not torch.equal(exits.translators[0].proj.weight, translator)
    lora_b = [p for n, p in peft_lm.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # LoRA moved


def full_adaptation(teacher_seed: int | None, lr: float):
    """Full adaptation of a tiny Llama (p_max 0, no early-exit loss) on the targets of itself
    (``teacher_seed`` None) or of another model; ``(original weights, weights after, held-out
    report against the original's own distributions)``."""
    lm = tiny_lm(LAYERS)
    original = {k: v.clone() for k, v in lm.state_dict().items()}
    own = teacher_set(lm, 16, 8, seed=1)
    data = own if teacher_seed is None else teacher_set(tiny_lm(LAYERS, seed=teacher_seed), 16, 8, seed=1)
    lm.requires_grad_(True)
    exits = DecoderExits(DecoderAdapter(lm), [2, 4], exit_head="shared", policy=False)
    train_exits_and_backbone(exits, data, settings(lr=lr, exit_scale=0.0, epochs=2), torch.Generator().manual_seed(0))
    return original, lm.state_dict(), evaluate_exits(exits, own, 16)


def test_full_adaptation_on_self_distilled_targets_keeps_the_full_depth_model():
    original, after, _ = full_adaptation(None, lr=0.0)
    assert all(torch.equal(after[k], v) for k, v in original.items())  # lr 0: identical
    original, after, kept = full_adaptation(None, lr=1e-4)
    assert any(not torch.equal(after[k], v) for k, v in original.items())  # it trained
    _, _, moved = full_adaptation(9, lr=1e-4)  # the same steps towards another model's outputs
    assert kept["agreement"][-1] >= 0.97 and kept["kl"][-1] < moved["kl"][-1] / 3


def test_bad_adaptation_input_names_the_key():
    lm = tiny_lm(LAYERS)
    with pytest.raises(AdaptationError, match="generate.adaptation.lora_targets.*c_attn"):
        check_adaptation("lora", 100, lm, ["c_attn"])
    with pytest.raises(AdaptationError, match="generate.adaptation.lora_targets"):
        add_lora(lm, 4, 8, ["c_attn"])
    with pytest.raises(AdaptationError, match="generate.adaptation.tokens"):
        check_adaptation("full", 0, lm, [])
    check_adaptation("none", 0, lm, ["c_attn"])  # nothing adapts: nothing to check
