"""The Past-Future comparison (tasks/reports/past_future.py): dev-chosen rows and the claim check."""

import pytest

from tasks.reports.past_future import claim_check, comparison_rows


def point(speedup, dev_quality, test_quality):
    return {"threshold": speedup, "quality": dev_quality, "layer_speedup": speedup, "flops_speedup": speedup,
            "avg_exit_layer": 6 / speedup, "saved_layers": 1 - 1 / speedup}


def curve(*triples):
    return [{"dev": point(s, d, t), "test": {**point(s, t, t)}} for s, d, t in triples]


def test_rows_read_the_dev_point_nearest_each_speedup_and_report_its_test_numbers():
    curves = {"concat-future": {"entropy": curve((1.9, 80, 70), (2.05, 79, 71), (2.9, 75, 60), (3.4, 74, 65))},
              "local-weighted": {"entropy": curve((2.0, 81, 72), (3.0, 70, 55)), "patience": curve((2.5, 78, 74))}}
    rows = comparison_rows(curves, [2.0, 3.0])
    by = {r["method"]: r for r in rows}
    assert by["concat-future (entropy)"]["at"]["2x"]["test_quality"] == 71  # 2.05 is nearer 2.0 than 1.9
    assert by["concat-future (entropy)"]["at"]["3x"]["test_quality"] == 60
    assert by["local-weighted (patience)"]["at"]["3x"]["dev_layer_speedup"] == 2.5  # the only point
    assert [r["kind"] for r in rows] == ["past-future", "local", "local"]
    assert by["local-weighted (patience)"]["at"]["3x"]["on_target"] is False  # 2.5x is not about 3x
    assert by["concat-future (entropy)"]["at"]["3x"]["on_target"] is True  # 2.9x is within 4%
    claim = claim_check(rows, "3x")
    # patience (dev 78 at 2.5x) would win on dev but is off target: entropy (dev 70 / test 55 at 3.0x) is compared
    assert claim["local"] == "local-weighted (entropy)" and claim["margin"] == pytest.approx(60 - 55)
    assert claim["holds"] is True and claim["local_dev_speedup"] == 3.0
    # a past-future row that cannot reach the target leaves the claim unchecked
    slow = comparison_rows({"concat-future": {"entropy": curve((2.0, 80, 70))},
                            "local-joint": {"entropy": curve((3.0, 70, 60))}}, [3.0])
    assert claim_check(slow, "3x") is None
