"""Difficulty predictors' metrics, Majority, Linear-M targets and oversampling, on hand-made labels."""

import numpy as np
import pytest
import torch

from models.learnability import (
    EncoderPredictor,
    classifier_accuracy,
    fit_classifier,
    LinearB,
    fit_predictor,
    item_batches,
    predict_bits,
    BiLSTMPredictor,
    difficulty_metrics,
    exit_outcome,
    majority_bits,
    outcome_bits,
    negative_share,
    oversample_order,
)


def test_negative_label_micro_metrics_match_a_hand_count():
    gold = np.array([[0, 1, 1], [0, 0, 1], [1, 1, 1]])
    pred = np.array([[0, 0, 1], [1, 0, 1], [1, 1, 0]])
    # negative pairs: gold 0 at (0,0), (1,0), (1,1); predicted 0 at (0,0), (0,1), (1,1), (2,2)
    # true negatives found: (0,0), (1,1) -> precision 2/4, recall 2/3, F1 = 2PR/(P+R) = 4/7
    m = difficulty_metrics(gold, pred)
    assert m["precision"] == pytest.approx(50.0)
    assert m["recall"] == pytest.approx(200 / 3)
    assert m["f1"] == pytest.approx(400 / 7)
    assert m["accuracy"] == pytest.approx(100 * 6 / 9)  # wrong pairs: (0,1), (1,0), (2,2)
    assert m["layer_accuracy"] == pytest.approx([100 * 2 / 3, 100 * 2 / 3, 100 * 2 / 3])


def test_majority_predicts_each_layers_prior_and_scores_as_expected():
    train = np.array([[0, 1, 1], [0, 0, 1], [1, 0, 1], [0, 1, 0]])  # layer priors 0.25, 0.5, 0.75
    prior = majority_bits(train)
    assert prior.tolist() == [0, 1, 1]  # a tie (layer 2) goes to "correct"
    test = np.array([[0, 1, 1], [1, 0, 1]])
    m = difficulty_metrics(test, np.tile(prior, (2, 1)))
    # predicted negative: layer 1 of both rows; true negatives there: row 1 only; gold negatives: 2
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((50.0, 50.0, 50.0))


def test_all_positive_predictions_leave_precision_and_f1_undefined():
    m = difficulty_metrics(np.array([[0, 1], [1, 1]]), np.ones((2, 2), dtype=int))
    assert m["precision"] is None and m["f1"] is None and m["recall"] == 0.0


def test_exit_outcome_is_first_layer_of_the_trailing_correct_run_and_round_trips():
    labels = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 0]])
    outcome = exit_outcome(labels)
    assert outcome.tolist() == [0, 1, 2, 3, 3]  # 3 = L = "never"
    assert outcome_bits(outcome, 3).tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_oversampling_raises_the_negative_label_share():
    # the published-set shape: most rows hold a wrong exit, yet negatives are the minority of pairs
    labels = np.array([[0, 1, 1, 1]] * 7 + [[1, 1, 1, 1]] * 3)  # 7 of 10 rows hold a negative; 7 of 40 pairs
    neg, pairs = (labels == 0).sum(1), np.full(10, 4)
    order = oversample_order(neg, pairs, seed=0)
    assert sorted(set(order)) == list(range(10))  # every row kept
    assert all(order.count(i) == 1 for i in range(7, 10))  # all-correct rows are never repeated
    assert negative_share(neg, pairs) == pytest.approx(7 / 40)
    assert negative_share(neg, pairs, order) > 7 / 40
    assert len(order) == 20  # parity is out of reach (1 negative in 4 per row): capped at doubling
    assert oversample_order(neg, pairs, seed=0) == order  # seeded


def test_oversampling_draws_rows_in_proportion_to_their_negative_labels():
    neg, pairs = np.array([2, 1, 0]), np.array([8, 8, 8])  # parity is out of reach: the whole budget is drawn
    order = oversample_order(neg, pairs, seed=0, max_growth=1000)
    extra = [order.count(i) - 1 for i in range(3)]
    assert sum(extra) == 3000 and extra[2] == 0
    assert extra[0] / extra[1] == pytest.approx(2, rel=0.1)  # twice the negatives, twice the draws


def test_oversampling_stops_at_parity_and_leaves_negative_majorities_alone():
    labels = np.array([[0, 0, 0, 1]] * 2 + [[1, 1, 1, 1]] * 8)  # 6 of 40 pairs negative, 3 per holder
    neg, pairs = (labels == 0).sum(1), np.full(10, 4)
    order = oversample_order(neg, pairs, seed=3, max_growth=10)
    assert len(order) == 10 + 14  # first k with 2 * (6 + 3k) >= 40 + 4k: k = 14
    assert negative_share(neg, pairs, order) == pytest.approx(0.5)
    mostly_wrong = np.array([3, 3]), np.array([4, 4])
    assert sorted(oversample_order(*mostly_wrong, seed=1)) == [0, 1]


def test_bilstm_ignores_padding():
    torch.manual_seed(0)
    model = BiLSTMPredictor(torch.randn(20, 8), num_layers=3, hidden=16).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    other_pad = ids.clone()
    other_pad[0, 3:] = 9
    assert torch.allclose(model(ids, mask), model(other_pad, mask))
    assert torch.allclose(model(ids, mask), model(ids[:, :3], mask[:, :3]), atol=1e-6)


def test_item_batches_follow_the_order_with_layers_first():
    states = torch.arange(5 * 3 * 2, dtype=torch.float32).reshape(5, 3, 2)  # [n, L, d]
    labels = torch.arange(5 * 3).reshape(5, 3)
    out = list(item_batches(states, labels, [4, 0, 2], size=2))
    assert [b["states"].shape for b in out] == [(3, 2, 2), (3, 1, 2)]
    assert torch.equal(out[0]["states"][:, 1], states[0]) and torch.equal(out[1]["labels"], labels[[2]])


def test_fit_predictor_ends_with_the_epoch_best_on_dev_f1():
    g = torch.Generator().manual_seed(0)
    states, labels = torch.randn(40, 3, 4, generator=g), (torch.rand(40, 3, generator=g) < 0.6).long()
    torch.manual_seed(0)
    model = LinearB(4, 3)
    history, best = fit_predictor(model, "linear_b", lambda epoch: item_batches(states[:30], labels[:30], list(range(30)), size=8),
                                  lambda: item_batches(states[30:], labels[30:], list(range(10))), epochs=5, lr=0.3)
    f1 = [h["dev_f1"] or 0.0 for h in history]
    assert best["epoch"] == 1 + f1.index(max(f1)) < len(history)  # not the last epoch: selection did something
    again = difficulty_metrics(*predict_bits(model, "linear_b", item_batches(states[30:], labels[30:], list(range(10)))))
    assert again == best["dev"]


def test_classifier_accuracy_counts_argmax_hits_over_every_row():
    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return torch.nn.functional.one_hot(input_ids[:, 0] % 2, 2).float()

    batches = [{"input_ids": torch.tensor([[0], [1], [2]]), "attention_mask": torch.ones(3, 1), "labels": torch.tensor([0, 0, 0])},
               {"input_ids": torch.tensor([[3]]), "attention_mask": torch.ones(1, 1), "labels": torch.tensor([1])}]
    assert classifier_accuracy(Fixed(), batches) == 75.0  # rows 0, 2, 3 of 4; not a mean of per-batch accuracies


def test_fit_classifier_scores_every_split_after_every_epoch_without_selection():
    from tests.conftest import tiny_backbone, tiny_batch

    torch.manual_seed(0)
    model = EncoderPredictor(tiny_backbone("bert", layers=2), 2)
    data = [tiny_batch(batch=8, seed=s, labels=2) for s in range(2)]
    seen = []
    history = fit_classifier(model, lambda epoch: data, {"train": lambda: data, "test": lambda: data[:1]}, epochs=3, lr=1e-3,
                             on_epoch=seen.append)
    assert [list(h) for h in history] == [["epoch", "train_accuracy", "test_accuracy"]] * 3 and seen == history
    assert history[-1]["train_accuracy"] == classifier_accuracy(model, data)  # the last epoch's weights are kept
