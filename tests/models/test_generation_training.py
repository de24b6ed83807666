"""The generation exits' training loops: init trains the translators only and lowers the weighted
loss; the rounds leave the decoder alone, train the policy and the translators, and are a
function of the seeded generator; the token shuffle covers every token once."""

import torch

from models.adapters.decoder import DecoderAdapter
from models.generation import DecoderExits, collect_exit_states, weighted_exit_loss
from models.generation_training import (
    InitTraining,
    PolicyTraining,
    point_report,
    token_batches,
    train_init_exits,
    train_policy_rounds,
)
from tests.models.test_generation import tiny_lm

POLICY = PolicyTraining(rounds=2, policy_epochs=1, batch_tokens=8, policy_lr=1e-2, exit_lr=1e-2, weight_decay=0.0,
                        exit_batch_tokens=8, reward="hardness", copies=2, alpha=0.02, epsilon_start=0.2, epsilon_end=0.0)


def _tokens(exits, seed=0, rows=3, length=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 61, (rows, length), generator=g)
    predicts = torch.ones_like(ids)
    predicts[:, -1] = 0
    with torch.no_grad():
        states = collect_exit_states(exits, ids, torch.ones_like(ids), predicts)  # [P, n, d]
    return states, ids[:, 1:].reshape(-1)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _setup(seed=0):
    lm = tiny_lm()
    exits = DecoderExits(DecoderAdapter(lm), [2, 4])
    torch.manual_seed(seed)
    states, targets = _tokens(exits)
    return lm, exits, states, targets


def test_token_batches_cover_every_token_once_in_a_seeded_order():
    out = token_batches(10, 4, torch.Generator().manual_seed(1))
    assert [len(b) for b in out] == [4, 4, 2] and sorted(torch.cat(out).tolist()) == list(range(10))
    again = token_batches(10, 4, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(out, again))


def test_init_trains_only_the_translators_and_lowers_the_weighted_loss():
    lm, exits, states, targets = _setup()
    lm_before, policy_before = _state(lm), _state(exits.policy)
    start = weighted_exit_loss(exits, states, targets).item()
    seen = []
    history = train_init_exits(exits, states, targets, InitTraining(epochs=5, lr=0.05, weight_decay=0.0, batch_tokens=8),
                               torch.Generator().manual_seed(0), on_epoch=seen.append)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5] and seen == history
    assert weighted_exit_loss(exits, states, targets).item() < start - 0.05
    assert all(torch.equal(v, lm_before[k]) for k, v in lm.state_dict().items())
    assert all(torch.equal(v, policy_before[k]) for k, v in exits.policy.state_dict().items())


def test_init_without_translators_does_nothing():
    lm = tiny_lm()
    exits = DecoderExits(DecoderAdapter(lm), [2, 4], exit_head="shared")
    states, targets = _tokens(exits)
    assert train_init_exits(exits, states, targets, InitTraining(3, 0.05, 0.0, 8), torch.Generator()) == []


def test_rounds_train_policy_and_translators_leave_the_decoder_and_repeat_under_one_seed():
    runs = []
    for _ in range(2):
        lm, exits, states, targets = _setup()
        lm_before, exits_before = _state(lm), _state(exits)
        rounds = train_policy_rounds(exits, states, targets, states, targets, POLICY, torch.Generator().manual_seed(3))
        assert [r["round"] for r in rounds] == [1, 2] and len(rounds[0]["mean_pi"]) == 1
        assert all(torch.equal(v, lm_before[k]) for k, v in lm.state_dict().items())
        after = _state(exits)
        moved = {k for k in after if not torch.equal(after[k], exits_before[k])}
        assert any(k.startswith("policy.") for k in moved) and any(k.startswith("translators.") for k in moved)
        runs.append((rounds, after))
    assert runs[0][0] == runs[1][0] and all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_point_report_gives_each_point_its_loss_and_accuracy_per_token_set():
    _, exits, states, targets = _setup()
    report = point_report(exits, {"fit": (states, targets), "held_out": (states[:, :4], targets[:4])}, "init_before")
    assert list(report) == ["init_before_fit", "init_before_held_out"]
    assert all(len(v["point_loss"]) == 2 and len(v["point_accuracy"]) == 2 for v in report.values())
