"""Criterion semantics on hand-made logits (ties, regression, forced last-layer exit)."""

import math

import pytest
import torch

from models.berxit import LearnedExit
from models.criteria import Entropy, MaxProb, Patience, Static, make_criterion, simulate


def logits_from_probs(*rows):
    return torch.tensor(rows, dtype=torch.float64).log()


def test_maxprob_exits_at_threshold_inclusive():
    logits = logits_from_probs([0.7, 0.3], [0.6, 0.4], [0.5, 0.5])
    fire, _ = MaxProb(0.6).step(1, logits, None, {})
    assert fire.tolist() == [True, True, False]


def test_entropy_is_strict_and_stable_for_extreme_logits():
    p = 0.7
    h = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    logits = torch.cat([logits_from_probs([p, 1 - p]), torch.tensor([[1e4, -1e4]], dtype=torch.float64)])
    fire, _ = Entropy(h).step(1, logits, None, {})
    assert fire.tolist() == [False, True]  # entropy == tau does not exit; a one-hot (entropy 0) does
    fire, _ = Entropy(h + 1e-9).step(1, logits, None, {})
    assert fire.tolist() == [True, True]
    assert torch.isfinite(Entropy.score(logits, None)).all()


def test_patience_counts_consecutive_agreements_and_resets():
    # predictions per layer for one row: 0, 0, 1, 1, 1 -> counters 0, 1, 0, 1, 2
    preds = [0, 0, 1, 1, 1]
    logits = torch.stack([torch.tensor([[2.0, 0.0]]) if p == 0 else torch.tensor([[0.0, 2.0]]) for p in preds])
    crit = Patience(2)
    state = crit.init_state(1, torch.device("cpu"))
    counts = []
    for k in range(1, 6):
        fire, state = crit.step(k, logits[k - 1], None, state)
        counts.append(int(state["count"]))
    assert counts == [0, 1, 0, 1, 2]
    layer, _ = simulate(Patience(2), logits)
    assert layer.tolist() == [5]
    layer, _ = simulate(Patience(1), logits)
    assert layer.tolist() == [2]


def test_patience_regression_uses_delta():
    values = torch.tensor([1.0, 1.05, 2.0, 2.02, 2.5]).view(5, 1, 1)
    layer, out = simulate(Patience(1, delta=0.1), values)
    assert layer.tolist() == [2] and out.item() == pytest.approx(1.05)
    layer, _ = simulate(Patience(1, delta=0.01), values)
    assert layer.tolist() == [5]  # no pair within 0.01 before the last layer: forced exit at L


def test_last_layer_always_exits_in_simulation():
    logits = logits_from_probs([0.5, 0.5]).expand(4, 1, 2)
    layer, _ = simulate(MaxProb(0.99), logits)
    assert layer.tolist() == [4]


def test_static_and_lte():
    logits = torch.zeros(4, 3, 2)
    layer, _ = simulate(Static(3), logits)
    assert layer.tolist() == [3, 3, 3]
    certainty = torch.tensor([[0.1, 0.9, 0.5], [0.6, 0.2, 0.5], [0.1, 0.1, 0.5], [0.0, 0.0, 0.0]])
    layer, _ = simulate(LearnedExit(0.5), logits, {"lte": certainty})
    assert layer.tolist() == [2, 1, 1]


def test_unknown_criterion_lists_choices():
    with pytest.raises(ValueError, match="maxprob"):
        make_criterion("confidence", 0.5)
