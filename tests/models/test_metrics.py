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


def test_an_overconfident_model_that_learned_is_not_flagged_but_a_near_majority_one_is():
    labels = torch.tensor([0] * 10 + [1] * 10)
    confident = torch.tensor([[9.0, 0.0]] * 10 + [[0.0, 9.0]] * 8 + [[9.0, 0.0]] * 2)  # 90% right, very sure when wrong
    check = chance_check("accuracy", confident, labels, regression=False)
    assert check["loss"] > check["chance_loss"] and not check["at_chance"]
    labels = torch.tensor([0] * 20 + [1] * 20)
    barely = torch.tensor([[0.2, 0.0]] * 20 + [[0.0, 0.3]] * 1 + [[3.0, 0.0]] * 19)  # 52.5% vs 50%, loss above the prior's
    check = chance_check("accuracy", barely, labels, regression=False)
    assert check["score"] > check["majority_score"] and check["loss"] > check["chance_loss"] and check["at_chance"]


def test_scores_are_python_floats_for_float32_labels():
    """STS-B labels arrive as float32 tensors; a numpy float32 score broke every JSON write."""
    import json

    import torch

    from models.metrics import task_score

    labels = torch.tensor([0.5, 1.0, 3.5, 4.0], dtype=torch.float32)
    logits = torch.tensor([[0.4], [1.5], [3.0], [4.5]], dtype=torch.float32)
    score = task_score("pearson_spearman", logits, labels, regression=True)
    assert type(score) is float and json.dumps(score)
    assert type(task_score("accuracy", torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]), False)) is float


def test_a_regression_model_below_the_constant_prediction_is_flagged_on_float32_labels():
    """The constant prediction's correlation is 0, not NaN: a float32 mean's np.std is ~1e-7, and
    scipy's NaN made ``score <= majority`` false, so an STS-B model at -0.6 was never flagged."""
    gen = torch.Generator().manual_seed(0)
    labels = (5 * torch.rand(100, generator=gen)).float()  # n = 100, seed 0: the constant's float32 std is 4.8e-7
    check = chance_check("pearson_spearman", (-0.1 * labels + torch.randn(100, generator=gen))[:, None], labels, True)
    assert check["majority_score"] == 0.0 and check["score"] < 0 and check["at_chance"]
    near_constant = chance_check("pearson_spearman", torch.full((100, 1), 2.5) + 1e-9 * torch.randn(100, 1, generator=gen),
                                 labels, True)
    assert near_constant["at_chance"] and near_constant["majority_score"] == 0.0
