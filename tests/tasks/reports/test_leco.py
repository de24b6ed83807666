"""LECO's comparison (tasks/reports/leco.py) on hand-made numbers: AVG / BEST, the two claims."""

import pytest

from tasks.reports.leco import exiting_claim, leco_markdown, training_claim, training_rows
from models.tradeoff import speedup_rows


def test_avg_is_the_mean_layer_score_and_best_the_best_layer_on_test():
    rows = training_rows({"leco": {"dev": [70, 80, 90], "test": [60, 85, 80]},
                          "jt-linear": {"dev": [75, 80, 85], "test": [70, 75, 84]}})
    leco, jt = rows
    assert leco["test_avg"] == pytest.approx(75.0) and leco["test_best"] == 85 and leco["best_layer"] == 2
    assert leco["dev_avg"] == pytest.approx(80.0) and jt["test_avg"] == pytest.approx(76.333333)
    claim = training_claim(rows)
    assert claim["best_other"] == "jt-linear" and claim["margin"] == pytest.approx(-1.333333) and not claim["holds"]
    rows.append(training_rows({"jt-mha": {"dev": [0, 0, 0], "test": [50, 50, 50]}})[0])
    assert training_claim(rows)["best_other"] == "jt-linear"  # the strongest rival, by test AVG


def curve(*points):
    """Sweep points from ``(dev speed-up, dev quality, test quality)``."""
    return [{"dev": {"threshold": i, "layer_speedup": s, "quality": dq},
             "test": {"threshold": i, "layer_speedup": s, "quality": tq, "flops_speedup": s}}
            for i, (s, dq, tq) in enumerate(points)]


def test_cobee_is_checked_per_target_against_the_best_other_criterion_on_the_leco_model_chosen_on_dev():
    curves = {"leco": {"cobee": curve((2.0, 80, 79), (3.0, 75, 74)),
                       "entropy": curve((2.0, 81, 76), (3.0, 70, 71)),
                       "lte": curve((2.0, 79, 80), (3.0, 72, 73))},
              "jt-linear": {"patience": curve((2.0, 90, 90), (3.0, 90, 90))}}
    rows = speedup_rows(curves, [2.0, 3.0], lambda s, c: "leco" if s == "leco" else "baseline")
    checks = exiting_claim(rows, [2.0, 3.0])
    # at 2x the rival is entropy (best dev quality 81), not lte (best test) nor jt-linear (another model)
    assert checks[0]["best_other"] == "leco (entropy)" and checks[0]["margin"] == pytest.approx(3.0) and checks[0]["holds"]
    assert checks[1]["best_other"] == "leco (lte)" and checks[1]["margin"] == pytest.approx(1.0)
    text = leco_markdown(training_rows({"leco": {"dev": [1], "test": [1]}}), None, "", checks, 42)
    assert "does not grow" in text and "+3.00 at 2x -> +1.00 at 3x" in text
    off = exiting_claim(speedup_rows({"leco": {"cobee": curve((1.2, 80, 80)), "entropy": curve((2.0, 1, 1))}}, [2.0],
                                     lambda s, c: "leco"), [2.0])
    assert off == [{"at": "2x", "checked": False, "cobee_on_target": False}]  # COBEE never reached 2x on dev
