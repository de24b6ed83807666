"""Unit records of the comparison (flows/compare_records.py): a grid whose cache is lost (a new
machine) goes on from the committed records without computing a finished unit, spends no budget
on them and writes the same report; a record serves only the unit it was made for."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import yaml

from flows.compare_records import kept_shared_index, read_record, unit_key, write_record
from tasks.reports.cells import CellSummary, UnitResult
from tasks.row_predictions import write_test_rows


def summary(checkpoint: str, rows: str | None) -> CellSummary:
    point = {"threshold": 0.5, "quality": 80.0, "layer_speedup": 2.0, "flops_speedup": 1.9}
    return CellSummary("accuracy", 6, 81.0, 80.5, {"entropy": [{"dev": point, "test": point}]}, {}, checkpoint, rows, False)


@pytest.fixture()
def tiny_project(tmp_path):
    """A params file and prepared data for task sst2, no training: enough to key units."""
    (tmp_path / "params.yaml").write_text("seed: 7\n")
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    (tmp_path / "data" / "sst2" / "train.jsonl").write_text('{"text": "a", "label": 1}\n')
    return tmp_path


def unit(project, **update):
    from config.params import load_params
    from flows.compare_grid import unit_params

    params = unit_params(load_params(project / "params.yaml"), project / "artifacts" / "cells", "sst2", 42, 1e-4)
    return params.model_copy(update=update)


def test_a_unit_key_sees_what_changes_results_and_not_where_or_how_the_grid_runs(tiny_project, tmp_path):
    params = unit(tiny_project)
    key = unit_key(params, "flows.static", "static-2")
    # where and how the grid runs, and what no cell reads: the same unit
    elsewhere = params.model_copy(update={
        "artifacts_dir": tmp_path / "other", "device": "cpu",
        "compare": params.compare.model_copy(update={"budget": "10m", "seeds": [1, 2, 3], "torch_threads": 7,
                                                     "unit_records": "somewhere"}),
        "generate": params.generate.model_copy(update={"max_new_tokens": 3})})
    assert unit_key(elsewhere, "flows.static", "static-2") == key
    # what it trains, how it is timed, its method, data and code: another unit
    epochs = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 9})})
    timing = params.model_copy(update={"compare": params.compare.model_copy(update={"timing_batch_size": 8})})
    others = {unit_key(epochs, "flows.static", "static-2"), unit_key(timing, "flows.static", "static-2"),
              unit_key(params, "flows.static", "static-3"),
              unit_key(params, "flows.hashee", "static-2")}  # another flows module: other code
    (tiny_project / "data" / "sst2" / "train.jsonl").write_text('{"text": "a", "label": 0}\n')
    others.add(unit_key(params, "flows.static", "static-2"))
    assert key not in others and len(others) == 5


def test_the_key_covers_the_flows_code_of_the_cell_but_not_its_mlflow_logging(tiny_project, monkeypatch):
    import flows.compare_records as records
    from tasks.caching import source_closure

    closure = source_closure("flows.static", ("models", "tasks", "config", "flows"))
    assert {"flows.static", "flows.context", "flows.steps", "flows.tracking"} <= set(closure)
    params, real_hash = unit(tiny_project), records.file_hash
    key = unit_key(params, "flows.static", "static-2")

    def edited(module):
        return lambda path: "edited" if path == closure[module] else real_hash(path)

    monkeypatch.setattr(records, "file_hash", edited("flows.steps"))
    assert unit_key(params, "flows.static", "static-2") != key
    monkeypatch.setattr(records, "file_hash", edited("flows.tracking"))
    assert unit_key(params, "flows.static", "static-2") == key


def test_a_record_serves_its_own_key_only_and_never_half_written(tiny_project):
    rows = write_test_rows(tiny_project / "artifacts" / "eval", [0, 1, 1], {"entropy:0": np.array([0, 1, 0])}, False)
    checkpoint = tiny_project / "artifacts" / "train" / "checkpoint"
    folder = tiny_project / "results" / "units" / "sst2--static-2--seed-42--lr-0.0001"
    result = UnitResult(summary(str(checkpoint), str(rows)), None, 12.0)

    assert write_record(folder, "key-1", result, "Some CPU", 2)
    kept = json.loads((folder / "unit.json").read_text())
    assert kept["summary"]["checkpoint"] == "artifacts/train/checkpoint"  # relative: the same on every machine
    assert kept["machine"] == "Some CPU" and kept["torch_threads"] == 2
    served = read_record(folder, "key-1")
    assert served.error is None and served.seconds == 0.0
    assert served.summary.checkpoint == str(checkpoint) and served.summary.test_rows == str(folder / "test_rows.npz")
    assert served.summary.series == result.summary.series and served.summary.full_test == 80.5
    assert (folder / "test_rows.npz").read_bytes() == rows.read_bytes()
    assert not write_record(folder, "key-1", result, "Other CPU", 2)  # a record holding the key is left as it is
    assert json.loads((folder / "unit.json").read_text())["machine"] == "Some CPU"

    assert read_record(folder, "key-2") is None  # another unit's key
    assert write_record(folder, "key-2", result, "Other CPU", 2)  # ... which the unit then writes in its place
    assert read_record(folder, "key-1") is None and read_record(folder, "key-2") is not None
    (folder / "test_rows.npz").write_bytes(rows.read_bytes()[:-3])  # a write cut between the two files
    assert read_record(folder, "key-2") is None
    (folder / "test_rows.npz").unlink()
    assert read_record(folder, "key-2") is None  # rows missing
    (folder / "unit.json").write_text('{"key": "key-2", "summ')  # cut short
    assert read_record(folder, "key-2") is None
    assert not write_record(folder, "key-3", UnitResult(summary("c", None), None, 1.0), "CPU", 2)  # no rows: no record


def test_the_shared_trainings_index_is_kept_across_machines(tiny_project):
    params = unit(tiny_project, compare=unit(tiny_project).compare.model_copy(update={"unit_records": "results"}))
    first = kept_shared_index(params, {"k1": ["a/x", "a/y"]})
    assert first == {"k1": ["a/x", "a/y"]}
    # a second machine, whose cache knows only what it trained itself
    assert kept_shared_index(params, {"k1": ["a/z"], "k2": ["b/x"]}) == {"k1": ["a/x", "a/y", "a/z"], "k2": ["b/x"]}
    assert json.loads((tiny_project / "results" / "shared-trainings.json").read_text())["k2"] == ["b/x"]
    assert kept_shared_index(unit(tiny_project), {"k9": ["c"]}) == {"k9": ["c"]}  # no records: this machine's only


@pytest.mark.integration
def test_a_new_machine_goes_on_from_the_records_and_writes_the_same_report(project, prefect_harness, monkeypatch, tmp_path):
    import flows.compare_grid as grid_module
    from flows.compare import compare_flow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["compare"] = {"tasks": ["sst2"], "methods": ["joint"], "seeds": [0, 1], "lr_grid": [1e-3, 5e-3],
                         "static_layers": [1], "timing_batch_size": 4, "sequential": True, "torch_threads": 1,
                         "unit_records": "results/compare"}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    first = compare_flow(str(project / "params.yaml"), [])
    records = project / "results" / "compare"
    units = sorted(p.name for p in (records / "units").iterdir())
    assert len(units) == 6 and sum(u.startswith("sst2--joint--seed-1--") for u in units) == 1  # 2 rates x 2 methods + seed 1
    ledger = sorted(p.name for p in (records / "unit-costs").iterdir())
    assert len(ledger) == 6  # every unit computed here, its cost kept beside the records
    assert first["timing"]["cost"]["units_measured"] == 6

    # a new machine: the committed files only (no artifacts, no data prepared, no MLflow, another folder)
    other = tmp_path / "elsewhere"
    other.mkdir()
    for name in ("params.yaml", "src", "results", ".dvc"):
        (shutil.copytree if (project / name).is_dir() else shutil.copy)(project / name, other / name)

    def no_computing(*args):
        raise AssertionError("a recorded unit computed again")

    monkeypatch.setattr(grid_module, "run_unit", no_computing)
    reports = []
    for budget in ("10h", "1s"):  # ample, then spent at the first look: recorded units never wait for it
        minutes = itertools.count(0.0, 60.0)
        monkeypatch.setattr(grid_module, "clock", lambda: next(minutes) if budget == "1s" else 0.0)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        again = compare_flow(str(other / "params.yaml"), [f"compare.budget={budget}"])
        assert all(c["status"] == "ok" for c in again["cells"])
        assert again["timing"]["cost"]["units_measured"] == 6  # the ledger travelled with the records
        reports.append(json.loads((other / "artifacts" / "compare" / "default" / "report" / "compare.json").read_text()))
    mine = json.loads((project / "artifacts" / "compare" / "default" / "report" / "compare.json").read_text())
    assert reports == [mine, mine]  # the same report: cells, claims, and the shared trainings counted on both
    assert again["champions"] and all(c.get("skipped") == "checkpoint not on this machine" for c in again["champions"])

    # a unit whose record is gone computes again on the new machine, and only that one
    gone, = (other / "results" / "compare" / "units").glob("sst2--static-1--seed-1--lr-*")
    shutil.rmtree(gone)
    computed = []
    monkeypatch.setattr(grid_module, "run_unit", lambda params, method, *rest: computed.append(
        (method, params.seed)) or UnitResult(None, "not trained in this test", 0.0))
    monkeypatch.setattr(grid_module, "clock", lambda: 0.0)
    compare_flow(str(other / "params.yaml"), [])
    assert computed == [("static-1", 1)]
