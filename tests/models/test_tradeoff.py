"""The trade-off maths (tasks/reports/tradeoff.py) against hand-computed numbers."""

import math

import pytest

from models.tradeoff import (
    average_ranks,
    best_on_target,
    claim,
    curve_auc,
    dev_chosen_front,
    interpolate_at,
    mean_std,
    pareto_front,
    quality_at,
    speedup_rows,
)


def pt(dev_s: float, dev_q: float, test_s: float | None = None, test_q: float | None = None) -> dict:
    """A sweep point; test defaults to dev."""
    test_s = dev_s if test_s is None else test_s
    test_q = dev_q if test_q is None else test_q
    side = lambda s, q: {"threshold": 0.1, "quality": q, "layer_speedup": s, "flops_speedup": s}  # noqa: E731
    return {"dev": side(dev_s, dev_q), "test": side(test_s, test_q)}


def front(*xy: tuple[float, float]) -> list[dict]:
    return [pt(x, y) for x, y in xy]


def test_pareto_front_drops_dominated_points_and_sorts_by_x():
    zigzag = [(2.0, 88.0), (1.0, 90.0), (1.5, 85.0), (3.0, 70.0), (2.2, 60.0), (2.5, 80.0), (2.5, 75.0)]
    assert pareto_front(zigzag, 0, 1) == [(1.0, 90.0), (2.0, 88.0), (2.5, 80.0), (3.0, 70.0)]
    dicts = [{"s": x, "q": y} for x, y in zigzag]
    assert [(p["s"], p["q"]) for p in pareto_front(dicts, "s", "q")] == [(1.0, 90.0), (2.0, 88.0), (2.5, 80.0), (3.0, 70.0)]


def test_dev_chosen_front_is_chosen_on_dev_whatever_test_says():
    # on dev (2, 80) beats (2, 75); on test the beaten point is better (90 > 70): dev decides
    points = [pt(1.0, 85.0, 1.0, 84.0), pt(2.0, 80.0, 2.0, 70.0), pt(2.0, 75.0, 2.0, 90.0)]
    assert [p["test"]["quality"] for p in dev_chosen_front(points)] == [84.0, 70.0]


def test_interpolate_at_is_linear_between_neighbours_and_none_outside():
    points = [(3.0, 70.0), (1.0, 90.0), (2.0, 86.0)]  # any order
    assert interpolate_at(points, 1.5) == pytest.approx(88.0)  # halfway from 90 to 86
    assert interpolate_at(points, 2.5) == pytest.approx(78.0)  # halfway from 86 to 70
    assert interpolate_at(points, 3.0) == 70.0
    assert interpolate_at(points, 0.9) is None and interpolate_at(points, 3.1) is None
    assert interpolate_at([(2.0, 50.0)], 2.0) == 50.0
    assert interpolate_at([], 1.0) is None


def test_quality_at_reads_test_numbers_flat_below_the_slowest_point_none_beyond_reach():
    curve = [pt(1.0, 99.0, 1.2, 88.0), pt(2.0, 98.0, 2.0, 80.0)]  # dev numbers must not be read
    assert quality_at(curve, 1.6) == pytest.approx(84.0)  # (1.2, 88) - (2.0, 80): 0.4 / 0.8 of the way
    assert quality_at(curve, 1.0) == 88.0  # below the slowest point: that point's quality
    assert quality_at(curve, 2.01) is None
    assert quality_at([], 1.5) is None


def test_auc_is_the_area_under_the_reading_over_the_range():
    assert curve_auc(front((1.0, 80.0), (3.0, 80.0))) == (pytest.approx(80.0), 3.0)
    assert curve_auc(front((1.0, 80.0), (2.0, 80.0))) == (pytest.approx(40.0), 2.0)  # 0 beyond the 2x reach
    # trapezoids (90+80)/2 on [1, 2] and (80+70)/2 on [2, 3] (70 = halfway to (4, 60)), over a width of 2
    assert curve_auc(front((1.0, 90.0), (2.0, 80.0), (4.0, 60.0)))[0] == pytest.approx((85.0 + 75.0) / 2)
    # flat at 88 from 1x to the slowest point 1.5x, then down to 78 at 2.5x, 0 from 2.5x to 3x
    assert curve_auc(front((1.5, 88.0), (2.5, 78.0)))[0] == pytest.approx((0.5 * 88.0 + 83.0) / 2)
    assert curve_auc(front((1.0, 90.0))) == (0.0, 1.0)  # the full model alone has no area
    assert curve_auc([]) == (0.0, None)


def test_mean_std_uses_ddof_1_and_counts_what_it_left_out():
    agg = mean_std([80.0, None, 84.0, 86.0])
    assert agg["mean"] == pytest.approx(250.0 / 3)
    # deviations -3.33, 0.67, 2.67: squares sum to 18.67, / (3 - 1)
    assert agg["std"] == pytest.approx(math.sqrt(56.0 / 3 / 2))
    assert (agg["n"], agg["of"], agg["values"]) == (3, 4, [80.0, None, 84.0, 86.0])
    assert mean_std([70.0]) == {"mean": 70.0, "std": None, "n": 1, "of": 1, "values": [70.0]}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0, "of": 1, "values": [None]}


def test_claim_needs_the_difference_to_exceed_the_seed_spread():
    agg = lambda mean, std: {"mean": mean, "std": std}  # noqa: E731
    above = claim(agg(80.0, 3.0), agg(70.0, 4.0))  # spread sqrt(9 + 16) = 5 < 10
    assert above == {"difference": 10.0, "spread": 5.0, "verdict": "above static"}
    assert claim(agg(74.0, 3.0), agg(70.0, 4.0))["verdict"] == "within the seed spread"  # 4 < 5
    assert claim(agg(64.0, 3.0), agg(70.0, 4.0))["verdict"] == "below static"  # -6 < -5
    assert claim(agg(90.0, None), agg(70.0, 1.0)) == {"difference": 20.0, "verdict": "one seed: no claim"}
    assert claim(agg(None, None), agg(70.0, 1.0)) == {"difference": None, "verdict": "not reached"}


def test_average_ranks_share_ties_and_skip_missing():
    agg = lambda m: {"mean": m}  # noqa: E731
    ranks = average_ranks({"a": {"t1": agg(80.0), "t2": agg(70.0)}, "b": {"t1": agg(80.0), "t2": agg(60.0)},
                           "c": {"t1": agg(50.0)}}, ["t1", "t2"])
    assert ranks == {"a": {"mean": 1.25, "tasks": 2}, "b": {"mean": 1.75, "tasks": 2}, "c": {"mean": 3.0, "tasks": 1}}


def test_rows_at_targets_read_the_nearest_dev_point_and_mark_it_off_target_beyond_4_percent():
    curves = {"m": {"entropy": [pt(1.9, 80.0, 1.9, 70.0), pt(2.05, 79.0, 2.1, 71.0), pt(2.5, 75.0, 2.5, 60.0)]}}
    (row,) = speedup_rows(curves, [2.0, 3.0], lambda s, c: f"{s}/{c}")
    assert row["method"] == "m (entropy)" and row["kind"] == "m/entropy"
    assert row["at"]["2x"]["test_quality"] == 71.0 and row["at"]["2x"]["test_layer_speedup"] == 2.1  # 2.05 is nearest
    assert row["at"]["2x"]["on_target"] is True  # 2.5% off
    assert row["at"]["3x"]["dev_layer_speedup"] == 2.5 and row["at"]["3x"]["on_target"] is False  # 17% off
    assert best_on_target([row], "3x", lambda r: True) is None
    assert best_on_target([row], "2x", lambda r: True) is row
