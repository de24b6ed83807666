"""The comparison's typed cells (tasks/reports/cells.py) write the JSON the untyped dicts wrote:
same keys, same order (``cell.json`` is written unsorted), and read it back."""

import json

import pytest

from tasks.reports.cells import ComparisonCell, TimedPoint, is_static, static_depth, static_method

SIDE = {"threshold": 0.2, "quality": 88.0, "layer_speedup": 1.8, "flops_speedup": 1.7}
EXIT_CELL = {  # an ok cell of a method with thresholds, in the order flows/compare.py wrote it
    "task": "sst2", "method": "joint", "seed": 1, "kind": "early-exit", "seconds": 6.0,
    "lr_scores": {"0.001": 90.0, "0.005": None}, "metric": "accuracy", "num_layers": 6,
    "full": {"dev": 90.0, "test": 89.0}, "series": {"entropy": [{"dev": SIDE, "test": SIDE}]},
    "timed": {"entropy": {"threshold": 0.2, "test_quality": 87.0, "dev_quality": 88.0, "dev_layer_speedup": 1.8,
                          "layer_speedup": 1.83, "flops_speedup": 1.7, "wallclock_speedup": 1.6}},
    "checkpoint": "artifacts/compare/x/ckpt", "status": "ok", "error": None, "lr": 0.001, "dev_score": 90.0}
STATIC_CELL = {  # one operating point: no dev numbers in its timed point
    "task": "sst2", "method": "static-3", "seed": 1, "kind": "static", "seconds": 2.0, "lr_scores": {"0.001": 80.0},
    "metric": "accuracy", "num_layers": 6, "full": {"dev": 80.5, "test": 80.0},
    "series": {"static": [{"dev": {"threshold": None, "layer_speedup": 2.0, "flops_speedup": 1.9, "quality": 80.5},
                           "test": {"threshold": None, "layer_speedup": 2.0, "flops_speedup": 1.9, "quality": 80.0}}]},
    "timed": {"static": {"threshold": None, "test_quality": 80.0, "layer_speedup": 2.0, "flops_speedup": 1.9,
                         "wallclock_speedup": 1.8}},
    "checkpoint": "artifacts/compare/x/static", "status": "ok", "error": None, "lr": 0.001, "dev_score": 80.5}
FAILED_CELL = {"task": "rte", "method": "broken", "seed": 2, "kind": "early-exit", "seconds": 0.5,
               "lr_scores": {"0.001": None}, "status": "failed", "error": "ValueError: boom", "lr": None}
NA_CELL = {"task": "sim", "method": "leco", "seed": 1, "kind": "early-exit", "status": "n/a", "seconds": 0.0,
           "error": "leco cannot do regression", "lr": None, "lr_scores": {}}


@pytest.mark.parametrize("data", [EXIT_CELL, STATIC_CELL, FAILED_CELL, NA_CELL], ids=["exit", "static", "failed", "n/a"])
def test_a_cell_writes_back_the_same_json_bytes(data):
    assert json.dumps(ComparisonCell.from_json(data).to_json(), indent=2) == json.dumps(data, indent=2)


def test_the_report_copy_has_no_seconds_key():
    from dataclasses import replace

    data = replace(ComparisonCell.from_json(NA_CELL), seconds=None).to_json()
    assert list(data) == ["task", "method", "seed", "kind", "status", "error", "lr", "lr_scores"]


def test_static_baselines_are_told_by_their_name_alone():
    static, method = ComparisonCell.from_json(STATIC_CELL), ComparisonCell.from_json(EXIT_CELL)
    assert static.is_static and static.static_layers == 3 and static.kind == "static"
    assert not method.is_static and method.static_layers is None and method.kind == "early-exit"
    assert static_method(4) == "static-4" and static_depth("static-4") == 4 and is_static("static-4")
    assert static_depth("joint") is None and not is_static("joint")


def test_typed_reads_of_an_ok_cell():
    cell = ComparisonCell.from_json(EXIT_CELL)
    assert cell.ok and cell.dev_score == 90.0 and cell.summary.full_test == 89.0 and cell.metric == "accuracy"
    assert [p["criterion"] for p in cell.points] == ["entropy"]
    (name, point), = cell.timed
    assert name == "entropy" and point.dev_speedup == 1.8  # ranked by dev, not the timed rows' 1.83
    single = TimedPoint.from_json(STATIC_CELL["timed"]["static"])
    assert single.dev_speedup == 2.0  # no dev numbers: the timed rows'
    failed = ComparisonCell.from_json(FAILED_CELL)
    assert not failed.ok and failed.points == [] and failed.timed == [] and failed.metric is None
    with pytest.raises(ValueError, match="status 'done'"):
        ComparisonCell.from_json({**FAILED_CELL, "status": "done"})
