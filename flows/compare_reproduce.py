"""``exitflow reproduce-cell``: re-run one cell of a comparison from nothing and check that its
quality figures equal the report's.

A cell (task, method, seed) of ``artifacts/compare/<profile>/report/compare.json`` is re-run at
the learning rate the report records, with the profile's settings, in a fresh folder
``<profile>/reproduce-runs/.run-*`` inside the project: its own artifacts tree, token cache and
shared-training index, and Prefect cache keys of its own (they hold the absolute output folder),
so nothing is served from an earlier run. The fresh cell's figures are then compared with the
report's, exactly (floats as JSON keeps them; thresholds to float32 rounding,
``tasks.reports.reproduction``):

- ``quality_figures``: the metric, the depth, full-depth dev and test quality, every swept
  threshold's dev and test side (threshold, quality, layer and FLOPs speed-up), every timed
  operating point without its wall-clock (which depends on the machine and its load), and the
  chance flag;
- the per-row test predictions of every sweep point (``test_rows.npz``), array by array, where
  the recorded ones are on this machine (the report names them in the committed unit records of a
  profile that keeps them, ``flows.compare_records``, else in the grid's cells tree; a report pulled
  without them is compared on its figures alone, ``row_arrays_compared`` 0). The re-run calls
  ``run_unit`` without a record: it neither serves from nor writes to the unit records.

The verdict goes to ``<profile>/reproduced/<unit>/result.json`` (the machine, the torch threads, the
figures compared, each difference, the thresholds that differ in float tails) and the command
exits 1 when a figure or a row prediction differs. A re-run that fails writes a verdict too, with its error (an earlier verdict must not stand
for code that no longer runs). The fresh tree is deleted afterwards unless ``--keep``; trees of
re-runs killed before they could delete theirs are removed by the next re-run on the host. Torch threads are what the grid's units get with the same
settings (``compare_grid.unit_threads``): pass the grid's ``--set`` overrides, since another count
can change the last bits of float reductions (the thresholds' float tails).

Run on a second machine with the report of the first (the DVC stage ``compare_standard`` tracks
it), this is the check that a cell reproduces across machines.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from prefect import flow

from flows.compare_grid import run_unit, unit_name, unit_params, unit_threads
from flows.context import load_context, prepare_task_data
from flows.runtime import machine_description
from models.errors import ExitflowError
from tasks.io import RESULT_FILE, atomic_write_json, portable_path, process_alive
from tasks.reports.reproduction import figure_differences, figures_digest, quality_figures, reproduction_result, row_differences

REPORT = Path("report") / "compare.json"
REPRODUCED = "reproduced"  # <profile>/reproduced/<unit>/result.json: each verdict
FRESH_RUNS = "reproduce-runs"  # <profile>/reproduce-runs/.run-*: the re-runs' trees, deleted unless kept


def recorded_cell(report_file: Path, task: str, method: str, seed: int) -> dict:
    """The report's cell ``(task, method, seed)`` as ``compare.json`` holds it; an ``ExitflowError``
    naming what is missing when the report, the cell or its result is not there."""
    if not report_file.is_file():
        raise ExitflowError(f"{report_file}: no comparison report; run `exitflow compare` with this profile first "
                            "(or `dvc pull` the report of another machine)")
    try:
        tasks = json.loads(report_file.read_text())["tasks"]
    except (ValueError, KeyError, TypeError) as err:
        raise ExitflowError(f"{report_file}: not a comparison report ({type(err).__name__}: {err}); "
                            "run `exitflow compare` with this profile to rewrite it") from None
    if task not in tasks:
        raise ExitflowError(f"{task}: not a task of {report_file} (it has {', '.join(sorted(tasks))})")
    methods = tasks[task]["methods"]
    if method not in methods:
        raise ExitflowError(f"{method}: not a method of {task} in {report_file} (it has {', '.join(methods)})")
    cells = {c["seed"]: c for c in methods[method]["cells"]}
    if seed not in cells:
        raise ExitflowError(f"seed {seed}: no cell of {task}/{method} in {report_file} (seeds {', '.join(map(str, cells))})")
    cell = cells[seed]
    if cell["status"] != "ok":
        raise ExitflowError(f"{task}/{method}/seed-{seed} is {cell['status']} in {report_file}: nothing to reproduce "
                            "(run `exitflow compare` with this profile until it is ok)")
    return cell


def compare_rows(root: Path, recorded: str | None, rerun: str | None) -> tuple[int, list[str], str]:
    """``(arrays compared, differences, note)`` of the recorded cell's per-row test predictions
    (``recorded``, a path under ``root``; they live in the grid's cells tree, not in the report) against
    the re-run's. Recorded rows the re-run did not write are a difference; recorded rows not on this
    machine (a report pulled without the grid's tree) leave the figures alone to compare, and say so."""
    if not recorded:
        return 0, [], "not compared: the report's cell names no per-row predictions"
    if not rerun:
        return 0, ["test rows: the report's cell has per-row predictions, the re-run wrote none"], "compared"
    if not (root / recorded).is_file():
        return 0, [], f"not compared: {recorded} is not on this machine (the grid's cells tree did not come with the report)"
    arrays, diffs = row_differences(root / recorded, root / rerun)
    return arrays, diffs, "compared"


def fresh_run_folder(runs: Path) -> Path:
    """A new empty folder ``runs/.run-<host>-<pid>-*`` for one re-run. Folders of earlier re-runs on
    this host whose process is gone (killed before it could delete its folder) are removed first;
    a live re-run's folder, or another host's, is left alone."""
    runs.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("-", "_")
    for orphan in runs.glob(f".run-{host}-*-*"):
        pid = orphan.name.split("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(orphan, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".run-{host}-{os.getpid()}-", dir=runs))


@flow(name="exitflow_reproduce_cell", log_prints=True)
def reproduce_cell_flow(params_path: str = "params.yaml", overrides: list[str] | None = None, profile: str | None = None,
                        task: str = "sst2", method: str = "joint", seed: int = 42, keep: bool = False) -> dict:
    """Re-run cell ``(task, method, seed)`` of ``profile``'s report from nothing; see the module docstring."""
    ctx = load_context(params_path, overrides, profile)
    params = ctx.params
    root = ctx.layout.compare / (profile or "default")
    report_file = root / REPORT
    cell = recorded_cell(report_file, task, method, seed)
    prepare_task_data(params, [task])
    threads = unit_threads(params)
    name = unit_name(task, method, seed, cell["lr"])
    report = portable_path(report_file, params.root)
    fresh = fresh_run_folder(root / FRESH_RUNS)
    print(f"[reproduce] {name.replace('--', ' / ')}: re-running from nothing in {fresh} ({threads} torch threads)")
    start = time.perf_counter()
    verdict = {"unit": name, "task": task, "method": method, "seed": seed, "profile": profile or "default",
               "report": report, "lr": cell["lr"], "figures_digest": figures_digest(cell),
               "machine": machine_description(params.device), "torch_threads": threads}
    try:
        result = run_unit(unit_params(params, fresh / "cells", task, seed, cell["lr"]), method, threads)
        if result.error is None:
            rerun = result.summary.to_json()
            compared, diffs, tails = figure_differences(quality_figures(cell), quality_figures(rerun))
            arrays, row_diffs, rows_note = compare_rows(params.root, cell.get("test_rows"), rerun.get("test_rows"))
    finally:
        if not keep:
            shutil.rmtree(fresh, ignore_errors=True)
    verdict["seconds"] = round(time.perf_counter() - start, 1)
    if result.error is not None:  # a verdict all the same: an earlier one must not stand for this code
        verdict.update(error=result.error, figures_compared=0, row_arrays_compared=0, rows="not compared: the re-run failed",
                       same_figures=False, identical=False, differences=[], threshold_float_tails=0,
                       max_threshold_relative_difference=0.0)
    else:
        verdict.update(figures_compared=compared,
                       row_arrays_compared=arrays, rows=rows_note, same_figures=not diffs and not row_diffs,
                       identical=not diffs and not row_diffs and not tails and arrays > 0, differences=diffs + row_diffs,
                       threshold_float_tails=len(tails), max_threshold_relative_difference=max(tails, default=0.0))
    atomic_write_json(root / REPRODUCED / name / RESULT_FILE, verdict)  # the docs' comparison page lists them
    print(f"[reproduce] {name}: {verdict['figures_compared']} figures and {verdict['row_arrays_compared']} per-row "
          "prediction arrays compared: " + reproduction_result(verdict)
          + "".join(f"\n  {d}" for d in verdict["differences"][:20]))
    return verdict

