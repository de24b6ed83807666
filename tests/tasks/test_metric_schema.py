"""The metric schema: readings on the dev-chosen front, curves ordered by speed-up, its docs page."""

from pathlib import Path

import pytest

from tasks.metric_schema import (at_key, curve_steps, curve_table, front_readings, render_schema_markdown,
                                 single_point_readings, speedup_step)

ROOT = Path(__file__).resolve().parents[2]


def point(dev, test):
    """A sweep point from (layer speed-up, quality) on dev and on test."""
    return {"dev": {"layer_speedup": dev[0], "quality": dev[1], "threshold": dev[0]},
            "test": {"layer_speedup": test[0], "quality": test[1], "flops_speedup": test[0], "threshold": dev[0]}}


# logged by a criterion whose sweep runs from fast to slow (max-prob's direction)
POINTS = [point((3.0, 60.0), (4.0, 50.0)),
          point((2.0, 70.0), (2.0, 95.0)),  # best on test, dominated on dev: never read
          point((2.0, 85.0), (2.0, 80.0)),
          point((1.0, 90.0), (1.0, 88.0))]


def test_front_is_chosen_on_dev_and_read_on_test_at_the_targets():
    assert front_readings(POINTS) == pytest.approx({"test_quality_at_1.5x": 84.0, "test_quality_at_2x": 80.0,
                                                    "test_quality_at_3x": 65.0})


def test_one_point_method_is_read_up_to_its_speedup_only():
    assert single_point_readings(70.0, 2.46) == {"test_quality_at_1.5x": 70.0, "test_quality_at_2x": 70.0}


def test_curves_increase_in_speedup_whatever_the_sweep_direction():
    table = curve_table(POINTS)
    assert table["test_layer_speedup"] == [1.0, 2.0, 2.0, 4.0]
    assert table["on_dev_front"] == [True, True, False, True]  # (2.0, 70) is dominated on dev
    assert curve_steps(POINTS, "test") == [(100, 88.0), (200, 80.0), (200, 95.0), (400, 50.0)]
    assert [step for step, _ in curve_steps(POINTS, "dev")] == [100, 200, 200, 300]
    assert speedup_step(2.456) == 246 and at_key(1.5) == "test_quality_at_1.5x" and at_key(2.0) == "test_quality_at_2x"


def test_committed_reference_page_is_the_rendered_schema():
    assert (ROOT / "docs/reference/metrics.md").read_text() == render_schema_markdown(), (
        "regenerate: python -c 'from tasks.metric_schema import render_schema_markdown as r; "
        "open(\"docs/reference/metrics.md\", \"w\").write(r())'")
