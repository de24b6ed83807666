"""Metrics from scipy / scikit-learn, and the chance-level check."""

import math

import pytest
import torch

from models.metrics import chance_check


def test_a_model_that_predicts_the_majority_class_is_at_chance():
    labels = torch.tensor([0, 0, 0, 1])
    majority_only = torch.tensor([[2.0, 0.0]] * 4)
    check = chance_check("accuracy", majority_only, labels, regression=False)
    assert check["majority_score"] == pytest.approx(75.0) and check["score"] == pytest.approx(75.0)
    assert check["chance_loss"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert check["at_chance"]


def test_a_model_that_learned_is_not_at_chance():
    labels = torch.tensor([0, 0, 0, 1])
    learned = torch.tensor([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    assert not chance_check("accuracy", learned, labels, regression=False)["at_chance"]


def test_regression_chance_is_the_label_variance():
    labels = torch.tensor([1.0, 2.0, 3.0, 4.0])
    good = chance_check("pearson_spearman", (labels + 0.1)[:, None], labels, regression=True)
    assert good["chance_loss"] == pytest.approx(1.25) and good["majority_score"] == 0.0 and not good["at_chance"]
    flat = chance_check("pearson_spearman", torch.full((4, 1), 2.5), labels, regression=True)
    assert flat["at_chance"]
