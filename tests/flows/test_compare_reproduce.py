"""exitflow reproduce-cell: one comparison cell re-run from nothing equals the report's figures;
a changed figure or row prediction is named; bad input fails naming what is missing."""

import json

import numpy as np
import pytest
import yaml

from flows.compare_reproduce import recorded_cell
from models.errors import ExitflowError
from tasks.reports.reproduction import figure_differences, quality_figures, reproduction_result, row_differences
from tasks.row_predictions import write_test_rows


def cell(test_quality: float = 80.0, wallclock: float = 1.5) -> dict:
    side = {"threshold": 0.5, "quality": test_quality, "layer_speedup": 2.0, "flops_speedup": 1.9}
    dev = {**side, "quality": 81.0}
    timed = {"threshold": 0.5, "test_quality": test_quality, "layer_speedup": 2.0, "flops_speedup": 1.9,
             "wallclock_speedup": wallclock}
    return {"task": "sst2", "method": "joint", "seed": 42, "status": "ok", "lr": 1e-4, "metric": "accuracy",
            "num_layers": 6, "full": {"dev": 81.0, "test": 82.0}, "series": {"entropy": [{"dev": dev, "test": side}]},
            "timed": {"entropy": timed}, "checkpoint": "a/checkpoint", "at_chance": False}


def test_figures_leave_out_wall_clock_and_paths_and_name_each_difference():
    count, diffs, tails = figure_differences(quality_figures(cell()), quality_figures({**cell(wallclock=9.9), "checkpoint": "b"}))
    assert diffs == [] and tails == [] and count > 10
    _, diffs, _ = figure_differences(quality_figures(cell()), quality_figures(cell(test_quality=80.1)))
    assert diffs == ["series.entropy[0].test.quality: recorded 80.0, re-run 80.1",
                     "timed.entropy.test_quality: recorded 80.0, re-run 80.1"]
    shorter = {**cell(), "series": {"entropy": []}}
    _, diffs, _ = figure_differences(quality_figures(cell()), quality_figures(shorter))
    assert "series.entropy[0].test.quality: recorded 80.0, re-run (absent)" in diffs


def test_thresholds_may_differ_in_float32_tails_only():
    """A threshold 2 ulps of float32 off is a float tail, not a difference; 1e-4 relative off is one."""
    def with_threshold(t):
        c = cell()
        c["series"]["entropy"][0]["dev"]["threshold"] = t
        return quality_figures(c)

    near = float(np.nextafter(np.nextafter(np.float32(0.5), np.float32(1)), np.float32(1)))
    _, diffs, tails = figure_differences(with_threshold(0.5), with_threshold(near))
    assert diffs == [] and tails == [pytest.approx((near - 0.5) / near)]
    _, diffs, tails = figure_differences(with_threshold(0.5), with_threshold(0.50005))
    assert diffs == ["series.entropy[0].dev.threshold: recorded 0.5, re-run 0.50005"] and tails == []
    _, diffs, tails = figure_differences(quality_figures(cell()), quality_figures(cell(test_quality=80.0 + 1e-9)))
    assert len(diffs) == 2 and tails == []  # only thresholds get the float32 allowance, not a quality
    verdict = {"same_figures": True, "identical": False, "threshold_float_tails": 1, "max_threshold_relative_difference": 2.4e-7,
               "differences": []}
    assert reproduction_result({**verdict, "row_arrays_compared": 0}) == \
        "same figures; per-row predictions not compared, 1 threshold differs in float32 tails"
    verdict["row_arrays_compared"] = 5
    assert reproduction_result(verdict) == "same figures; 1 threshold differs in float32 tails (max relative 2.4e-07)"
    assert reproduction_result({**verdict, "identical": True}) == "identical"
    assert reproduction_result({**verdict, "same_figures": False, "differences": ["x"]}) == "1 difference"


def test_rows_not_written_by_the_re_run_differ_and_rows_not_on_the_machine_are_said(tmp_path):
    from flows.compare_reproduce import compare_rows

    rows = write_test_rows(tmp_path / "a", [0, 1], {"entropy:0": np.array([0, 1])}, regression=False)
    assert compare_rows(tmp_path, "a/test_rows.npz", "a/test_rows.npz") == (2, [], "compared") and rows.exists()
    assert compare_rows(tmp_path, "a/test_rows.npz", None)[1] == [
        "test rows: the report's cell has per-row predictions, the re-run wrote none"]
    arrays, diffs, note = compare_rows(tmp_path, "gone/test_rows.npz", "a/test_rows.npz")
    assert (arrays, diffs) == (0, []) and note.startswith("not compared: gone/test_rows.npz is not on this machine")


def test_exit_status_follows_the_verdict(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import flows.compare_reproduce as module
    from flows import runtime
    from flows.cli import app

    (tmp_path / "params.yaml").write_text("seed: 1\nprofiles:\n  standard: {}\n")
    monkeypatch.setattr(runtime, "ensure_prefect_api", lambda: None)
    for same, status in ((True, 0), (False, 1)):
        monkeypatch.setattr(module, "reproduce_cell_flow", lambda *a, same=same: {"same_figures": same})
        result = CliRunner().invoke(app, ["reproduce-cell", "sst2", "joint", "--params", str(tmp_path / "params.yaml")])
        assert result.exit_code == status, result.output
    monkeypatch.setattr(module, "reproduce_cell_flow", lambda *a: recorded_cell(tmp_path / "none.json", "sst2", "joint", 1))
    result = CliRunner().invoke(app, ["reproduce-cell", "sst2", "joint", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2 and "none.json: no comparison report" in result.output


def test_row_predictions_are_compared_array_by_array(tmp_path):
    labels, preds = [0, 1, 1, 0], {"entropy:0": np.array([0, 1, 0, 0])}
    a = write_test_rows(tmp_path / "a", labels, preds, regression=False)
    b = write_test_rows(tmp_path / "b", labels, preds, regression=False)
    assert row_differences(a, b) == (2, [])
    c = write_test_rows(tmp_path / "c", labels, {"entropy:0": np.array([1, 1, 0, 1])}, regression=False)
    assert row_differences(a, c) == (2, ["test rows entropy:0: 2 of 4 rows differ"])
    d = write_test_rows(tmp_path / "d", labels, {"entropy:1": np.array([0, 1, 0, 0])}, regression=False)
    assert row_differences(a, d)[1] == ["test rows entropy:0: recorded only", "test rows entropy:1: re-run only"]
    a.write_bytes(b"PK\x03\x04 cut short")  # a damaged recorded file: one error naming it
    with pytest.raises(ExitflowError, match=f"{a}: not a readable per-row predictions file"):
        row_differences(a, b)


@pytest.mark.parametrize("settings, threads", [
    (dict(torch_threads=3, sequential=False, address=None, workers=None), 3),
    (dict(torch_threads=None, sequential=True, address=None, workers=None), 8),
    (dict(torch_threads=None, sequential=False, address="tcp://x:8786", workers=None), 1),
    (dict(torch_threads=None, sequential=False, address=None, workers=2), 4),
    (dict(torch_threads=None, sequential=False, address=None, workers=None), 1),
])
def test_a_re_run_gets_the_threads_a_grid_unit_gets(monkeypatch, settings, threads):
    from types import SimpleNamespace

    from flows.compare_grid import unit_threads

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert unit_threads(SimpleNamespace(compare=SimpleNamespace(**settings))) == threads


@pytest.mark.parametrize("task, method, seed, named", [
    ("mrpc", "joint", 42, "mrpc: not a task"), ("sst2", "leco", 42, "leco: not a method of sst2"),
    ("sst2", "joint", 7, "seed 7: no cell"), ("sst2", "hashee", 42, "is pending"),
])
def test_a_cell_not_in_the_report_fails_naming_it(tmp_path, task, method, seed, named):
    report = tmp_path / "compare.json"
    with pytest.raises(ExitflowError, match="no comparison report"):
        recorded_cell(report, "sst2", "joint", 42)
    pending = {"task": "sst2", "method": "hashee", "seed": 42, "status": "pending"}
    report.write_text(json.dumps({"tasks": {"sst2": {"methods": {"joint": {"cells": [cell()]},
                                                                  "hashee": {"cells": [pending]}}}}}))
    assert recorded_cell(report, "sst2", "joint", 42)["full"]["test"] == 82.0
    with pytest.raises(ExitflowError, match=named):
        recorded_cell(report, task, method, seed)
    report.write_text("{not json")
    with pytest.raises(ExitflowError, match="compare.json: not a comparison report"):
        recorded_cell(report, "sst2", "joint", 42)


@pytest.mark.integration
def test_a_cell_rerun_from_nothing_equals_the_report_and_a_changed_figure_is_found(project, prefect_harness, monkeypatch):
    from flows.compare import compare_flow
    from flows.compare_reproduce import reproduce_cell_flow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["compare"] = {"tasks": ["sst2"], "methods": ["joint"], "seeds": [0], "lr_grid": [1e-3], "static_layers": [1],
                         "timing_batch_size": 4, "sequential": True, "torch_threads": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    compare_flow(str(project / "params.yaml"), [])
    root = project / "artifacts" / "compare" / "default"

    verdict = reproduce_cell_flow(str(project / "params.yaml"), [], None, "sst2", "joint", 0)
    assert verdict["identical"] and verdict["same_figures"] and verdict["differences"] == []
    assert verdict["figures_compared"] > 20 and verdict["row_arrays_compared"] > 2
    written = json.loads((root / "reproduced" / "sst2--joint--seed-0--lr-0.001" / "result.json").read_text())
    assert written == verdict and "cores" in written["machine"]
    assert not list((root / "reproduce-runs").glob(".run-*"))  # the fresh tree is gone afterwards

    # a report whose figure differs from what the model gives is caught, naming the figure, also
    # where the recorded per-row predictions are not on the machine
    report = root / "report" / "compare.json"
    data = json.loads(report.read_text())
    recorded = data["tasks"]["sst2"]["methods"]["joint"]["cells"][0]
    recorded["full"]["test"] += 1.0
    report.write_text(json.dumps(data))
    (project / recorded["test_rows"]).unlink()  # as on a machine that pulled the report without the grid's cells tree
    verdict = reproduce_cell_flow(str(project / "params.yaml"), [], None, "sst2", "joint", 0, keep=True)
    fresh, = (root / "reproduce-runs").glob(".run-*")  # kept: the re-run trained its own model there, not served from the grid
    assert (fresh / "cells" / "lr-0.001" / "sst2" / "seed-0" / "train" / "joint" / "checkpoint").is_dir()
    assert not verdict["identical"] and not verdict["same_figures"]
    assert verdict["row_arrays_compared"] == 0  # the figures alone
    assert verdict["differences"] == [f"full.test: recorded {recorded['full']['test']}, "
                                      f"re-run {recorded['full']['test'] - 1.0}"]

    # a re-run that fails leaves a verdict saying so, in place of the earlier one
    from tasks.reports.cells import UnitResult

    monkeypatch.setattr("flows.compare_reproduce.run_unit", lambda *a: UnitResult(None, "RuntimeError: out of memory", 1.0))
    verdict = reproduce_cell_flow(str(project / "params.yaml"), [], None, "sst2", "joint", 0)
    written = json.loads((root / "reproduced" / "sst2--joint--seed-0--lr-0.001" / "result.json").read_text())
    assert written == verdict and not verdict["same_figures"] and verdict["figures_compared"] == 0
    assert reproduction_result(verdict) == "re-run failed: RuntimeError: out of memory"


def test_a_re_run_folder_left_by_a_killed_re_run_is_removed_and_a_live_one_kept(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from flows.compare_reproduce import fresh_run_folder

    host = socket.gethostname().replace("-", "_")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f".run-{host}-{int(gone.stdout)}-abc"  # its process has exited
    live = tmp_path / f".run-{host}-{os.getppid()}-def"  # a process that is running
    elsewhere = tmp_path / f".run-otherhost-{int(gone.stdout)}-ghi"  # another host's: its pids are not ours to judge
    for folder in (killed, live, elsewhere):
        (folder / "cells").mkdir(parents=True)
    fresh = fresh_run_folder(tmp_path)
    assert fresh.is_dir() and not list(fresh.iterdir()) and fresh.name.startswith(f".run-{host}-{os.getpid()}-")
    assert not killed.exists() and live.exists() and elsewhere.exists()
