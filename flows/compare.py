"""``exitflow compare``: every registered method on every task and seed, next to static smaller
models, on one grid run by Dask, reported per task and tracked in MLflow.

The flow reads like the procedure::

    prepare data -> first seed: task x (methods + static-k) x lr   (each unit: the method's cached steps)
                 -> per (task, method): the lr with the best dev quality at full depth on that seed
                 -> the other seeds at that lr                   (no unit starts once compare.budget is spent)
                 -> report (tables, Pareto plots) -> MLflow parent run + nested run per cell
                 -> champion alias per (task, method), moved only when dev improves

The grid and its cells are ``flows.compare_grid`` (units, scale-out), the MLflow runs and
champions ``flows.champions`` (tracking).
"""

from __future__ import annotations

import time

import mlflow
from prefect import flow

from flows.champions import champions, log_cell
from flows.context import prepare_task_data, start_flow
from flows.runtime import machine_description
from flows.compare_grid import (  # noqa: F401  (check_dask_address: flows.cli imports it from here)
    assemble_cells,
    build_grid,
    check_dask_address,
    check_unique,
    compare_tasks,
    cost_summary,
    grid_timing,
    grid_units,
    ledger_dir,
    read_ledger,
    report_cells,
    run_notes,
    run_grid,
    runner_slots,
    serve_recorded,
    shared_in_tasks,
    task_runner,
)
from flows.compare_records import kept_shared_index
from tasks.caching import shared_counts, shared_index
from tasks.io import atomic_write_json
from tasks.reports.comparison import compare_report

EXPERIMENT = "exitflow-compare"


@flow(name="exitflow_compare", log_prints=True)
def compare_flow(params_path: str = "params.yaml", overrides: list[str] | None = None, profile: str | None = None,
                 address: str | None = None) -> dict:
    """The comparison over ``compare``'s grid; see the module docstring."""
    overrides = list(overrides or []) + ([f"compare.address={address}"] if address else [])
    ctx = start_flow(params_path, overrides, EXPERIMENT, profile,  # fails fast, naming the URI, when MLflow is down
                     data_tasks=None, prepare=False, check=lambda c: check_unique(c.params))
    params, profile_name = ctx.params, profile or "default"
    runner, threads, how = task_runner(params)  # fails fast, naming it, when a Dask address does not answer
    prepare_task_data(params, compare_tasks(params))
    root = ctx.layout.compare / profile_name
    budget, slots = params.compare.budget_seconds, runner_slots(params)

    def run(units, budget_s):
        def run_rest(todo, records):
            print(f"[compare] {len(todo)} units on {how}" + ("" if budget_s is None else f", {budget_s / 60:.1f} min of budget left"))
            return run_grid.with_options(task_runner=runner)(todo, threads, budget_s, None if budget_s is None else slots,
                                                             inline=params.compare.sequential, records=records)

        return serve_recorded(units, run_rest, budget_s)

    start = time.perf_counter()
    grid, results, na = build_grid(params, root / "cells", budget, run)
    wall = time.perf_counter() - start
    cells = assemble_cells(grid, results, params.compare.seeds) + na
    report = compare_report(report_cells(cells, params.root), tuple(params.compare.speedups), out_dir=root / "report",
                            rows_root=params.root, flag_gap=params.compare.flag_gap,
                            notes=run_notes(params, cells, shared_counts(shared_in_tasks(kept_shared_index(
                                params, shared_index(sorted((root / "cells").glob("lr-*/cache/trainings")))),
                                compare_tasks(params)))))
    ledger = read_ledger(ledger_dir(params, root))
    cost = cost_summary(grid_units(params, cells), {n: e["seconds"] for n, e in ledger.items()},
                        {n: e["machine"] for n, e in ledger.items()})
    machine = (machine_description(params.device) if params.compare.sequential or not params.compare.address
               else None)  # units ran on the scheduler's workers, which this process does not see
    timing = grid_timing(wall, how, results, cells, cost, machine)
    atomic_write_json(root / "timing.json", timing)  # wall-clock: beside the report, never inside it
    with ctx.parent_run(f"compare-{profile_name}", ("seed", "backbone", "train", "evaluate", "compare"), method="compare",
                            identity={"task": ",".join(ctx.params.compare.tasks)}):
        mlflow.set_tag("profile", profile_name)
        mlflow.log_metrics({"wall_seconds": wall, "unit_seconds": timing["unit_seconds"]})
        mlflow.log_dict(timing, "timing.json")
        mlflow.log_artifacts(str(root / "report"), "report")
        for cell in cells:
            log_cell(cell)
        report["champions"] = champions(params, profile_name, cells)
    print(report["table"])
    print(f"[compare] wall {wall / 60:.1f} min ({how}); by method: "
          + ", ".join(f"{m} {s / 60:.1f} min" for m, s in timing["by_method_seconds"].items()))
    return {**report, "timing": timing, "cells": [c.to_json() for c in cells]}
