"""Paired bootstrap intervals (tasks/reports/intervals.py) on hand-made rows whose interval is known,
and against a direct numpy bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import task_score
from models.tradeoff import quality_at
from tasks.reports.intervals import (FAILS, HOLDS, NO_DIFFERENCE, Reading, interpolation_weights, metric_on_rows,
                                     paired_difference, reading_quality)


def one(pred) -> Reading:
    return Reading((1.0,), (np.asarray(pred),))


def test_identical_sides_give_zero_interval_and_no_difference():
    rng = np.random.default_rng(0)
    gold = [rng.integers(0, 2, 200) for _ in range(3)]
    preds = [rng.integers(0, 2, 200) for _ in range(3)]
    out = paired_difference("accuracy", gold, [one(p) for p in preds], [one(p) for p in preds], resamples=200)
    assert (out["difference"], out["low"], out["high"]) == (0.0, 0.0, 0.0)
    assert out["verdict"] == NO_DIFFERENCE and out["seeds"] == 3


def test_a_constant_shift_gives_the_shift_as_interval():
    # every row contributes the same difference (A right, B wrong): every paired resample has it
    gold = [np.zeros(100, dtype=int)]
    a, b = np.zeros(100, dtype=int), np.ones(100, dtype=int)  # A right on every row, B on none
    out = paired_difference("accuracy", gold, [one(a)], [one(b)], resamples=200)
    assert out["difference"] == pytest.approx(100.0)
    assert out["low"] == pytest.approx(100.0) and out["high"] == pytest.approx(100.0)
    assert out["verdict"] == HOLDS
    flipped = paired_difference("accuracy", gold, [one(b)], [one(a)], resamples=200)
    assert flipped["verdict"] == FAILS and flipped["high"] == pytest.approx(-100.0)


def test_a_regression_shift_in_scale_is_no_difference_and_a_real_gain_holds():
    rng = np.random.default_rng(1)
    gold = rng.normal(size=300)
    noisy = gold + rng.normal(scale=2.0, size=300)
    # an affine map of the same prediction: Pearson and Spearman identical on every resample
    same = paired_difference("pearson_spearman", [gold], [one(noisy)], [one(3 * noisy + 1)], resamples=300)
    assert same["low"] == pytest.approx(0.0, abs=1e-9) and same["high"] == pytest.approx(0.0, abs=1e-9)
    assert same["verdict"] == NO_DIFFERENCE
    better = paired_difference("pearson_spearman", [gold], [one(gold + rng.normal(scale=0.3, size=300))], [one(noisy)],
                               resamples=300)
    assert better["verdict"] == HOLDS and better["low"] > 0


def test_matches_a_direct_numpy_bootstrap_over_rows_and_seeds():
    rng = np.random.default_rng(2)
    S, n, B = 3, 150, 4000
    gold = [rng.integers(0, 2, n) for _ in range(S)]
    a = [np.where(rng.random(n) < 0.8, g, 1 - g) for g in gold]  # ~80% right
    b = [np.where(rng.random(n) < 0.7, g, 1 - g) for g in gold]  # ~70% right
    out = paired_difference("accuracy", gold, [one(p) for p in a], [one(p) for p in b], resamples=B, seed=5)
    # the same two-sample scheme by hand: rows and seeds resampled independently, both sides paired
    d = np.stack([100.0 * ((pa == g).astype(float) - (pb == g)) for g, pa, pb in zip(gold, a, b)])  # [S, n]
    draws = np.random.default_rng(7)
    stats = []
    for _ in range(B):
        rows, seeds = draws.integers(0, n, n), draws.integers(0, S, S)
        stats.append(d[seeds][:, rows].mean())
    low, high = np.percentile(stats, [2.5, 97.5])
    assert out["difference"] == pytest.approx(d.mean())
    assert out["low"] == pytest.approx(low, abs=1.0) and out["high"] == pytest.approx(high, abs=1.0)
    # the seeds' spread widens the interval: one seed's rows alone give a narrower one
    rows_only = np.percentile([d[:, draws.integers(0, n, n)].mean() for _ in range(B)], [2.5, 97.5])
    assert high - low > rows_only[1] - rows_only[0]


@pytest.mark.parametrize("metric", ["accuracy", "acc_f1"])
def test_metric_on_rows_matches_task_score_for_classes(metric):
    import torch

    rng = np.random.default_rng(3)
    gold, pred = rng.integers(0, 2, 64), rng.integers(0, 2, 64)
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 2).float()
    assert metric_on_rows(metric, pred, gold) == pytest.approx(task_score(metric, logits, torch.tensor(gold), False))


def test_metric_on_rows_matches_task_score_for_regression_and_constant_is_zero():
    import torch

    rng = np.random.default_rng(4)
    gold, pred = rng.normal(size=64), rng.normal(size=64)
    expected = task_score("pearson_spearman", torch.tensor(pred).unsqueeze(-1), torch.tensor(gold), True)
    assert metric_on_rows("pearson_spearman", pred, gold) == pytest.approx(expected)
    assert metric_on_rows("pearson_spearman", np.full(64, 2.5), gold) == 0.0


def test_resampled_ranks_equal_scipy_rankdata_and_the_fast_spearman_equals_the_direct_one():
    from scipy.stats import rankdata

    from tasks.reports.intervals import resampled_ranks

    rng = np.random.default_rng(6)
    values = rng.integers(0, 5, 30).astype(float)  # many ties
    rows = rng.integers(0, 30, (7, 30))
    assert np.allclose(resampled_ranks(values, rows), rankdata(values[rows], axis=-1))
    gold, pred = rng.normal(size=30), values
    reading = Reading((0.3, 0.7), (pred, gold + rng.normal(size=30)))
    direct = sum(w * metric_on_rows("pearson_spearman", p[rows], gold[rows]) for w, p in zip(reading.weights, reading.predictions))
    assert np.allclose(reading_quality("pearson_spearman", reading, gold, rows), direct)


def test_interpolation_weights_reproduce_quality_at():
    front = [{"test": {"layer_speedup": s, "quality": q}} for s, q in ((1.0, 90.0), (2.0, 80.0), (3.0, 50.0))]
    xs = [p["test"]["layer_speedup"] for p in front]
    for target in (0.5, 1.0, 1.5, 2.0, 2.75, 3.0, 3.5):
        weights = interpolation_weights(xs, target)
        expected = quality_at(front, target)
        if expected is None:
            assert weights is None
        else:
            assert sum(w * front[i]["test"]["quality"] for i, w in weights) == pytest.approx(expected)


def test_reading_quality_is_the_weighted_metric():
    gold = np.array([0, 1, 1, 0])
    reading = Reading((0.25, 0.75), (np.array([0, 1, 1, 0]), np.array([1, 1, 1, 1])))
    assert reading_quality("accuracy", reading, gold) == pytest.approx(0.25 * 100 + 0.75 * 50)
