"""The grid of ``exitflow compare`` (``flows.compare``): task x (methods + static-k) x seed x
learning rate, its units run by a task runner, and the finished units assembled into cells.

**Units.** A unit is one (task, method, seed, learning rate): ``run_unit`` runs the method's
registered comparison cell (``flows.registry``) on the unit's own params, whose ``artifacts_dir`` is
``artifacts/compare/<profile>/cells/lr-<lr>``, so units never share an output folder. The
steps inside are the cached tasks of each method, so a re-run with nothing changed is served
from the cache. A unit that raises is reported ``failed`` with its error; the others go on. A
method that cannot do regression is ``n/a`` on a regression task and runs nothing.

**Scale-out.** Units run through Prefect's ``DaskTaskRunner``: a ``LocalCluster`` of
``compare.workers`` processes (default: one per core), one thread each, with
``compare.torch_threads`` torch threads per unit (default: cores // workers), so two units on
two cores do not fight; or ``compare.address`` (``--address``) submits them to an existing
Dask scheduler; ``compare.sequential`` runs them one after another in this process.
Multi-GPU: start one worker per GPU (``dask-cuda``'s ``LocalCUDACluster`` pins each worker to
its GPU with ``CUDA_VISIBLE_DEVICES``), pass its address, and ``device: auto`` puts each unit on
its worker's GPU. The worker processes need the Prefect API of the flow: the CLI starts the
temporary server before the flow and exports ``PREFECT_API_URL``, which workers inherit.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.context import RunContext
from flows.layout import Layout
from flows.registry import comparison_methods, comparison_variants
from config.params import ConfigError, Params
from tasks.data import load_meta
from tasks.io import portable_path
from tasks.reports.cells import CellSummary, ComparisonCell, UnitResult

CONNECT_TIMEOUT_S = 5


# ---- the grid -------------------------------------------------------------------------------------

def compare_tasks(params: Params) -> list[str]:
    """``compare.tasks`` plus every ``data.custom`` task, in that order, without repeats."""
    return list(dict.fromkeys([*params.compare.tasks, *params.data.custom]))


def check_unique(params: Params) -> None:
    """Two units with the same (task, method, seed, lr) would write one folder at once."""
    cfg = params.compare
    for what, values in (("methods", cfg.methods), ("seeds", cfg.seeds)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"compare.{what}: {', '.join(repeated)} listed more than once")


def unit_params(params: Params, cells_dir: Path, task: str, seed: int, lr: float) -> Params:
    """The params one unit runs with: its task, seed and learning rate, its own artifacts tree."""
    return params.model_copy(update={"seed": seed, "artifacts_dir": cells_dir / f"lr-{lr:g}",
                                     "train": params.train.model_copy(update={"task": task, "lr": lr})})


@task(name="compare_unit", cache_policy=NO_CACHE)  # the method's steps inside are cached
def run_unit(params: Params, method: str, threads: int) -> UnitResult:
    """One (task, method, seed, lr): its cell summary or its error; never raises for a method's
    failure, so one bad unit does not stop the grid. Seconds include cache hits."""
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    summary, error = None, None
    try:
        summary = comparison_variants(params)[method].run(RunContext.from_params(params))
    except Exception as err:  # reported in the table; the traceback goes to the Prefect log
        print(f"[compare] {params.train.task}/{method}/seed-{params.seed}/lr-{params.train.lr:g} failed:\n"
              + "".join(traceback.format_exception(err)))
        error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
    return UnitResult(summary, error, time.perf_counter() - start)


@flow(name="compare_grid")
def run_grid(units: list[tuple[Params, str]], threads: int) -> list[UnitResult]:
    """Submit every unit to the flow's task runner; results in ``units``' order."""
    futures = [run_unit.submit(p, method, threads) for p, method in units]
    results = []
    for future in futures:  # a unit lost by Dask (killed worker, memory) fails its cell, not the grid
        result = future.result(raise_on_failure=False)
        results.append(UnitResult(None, f"{type(result).__name__}: {result}".splitlines()[0][:300], 0.0)
                       if isinstance(result, BaseException) else result)
    return results


def task_runner(params: Params):
    """``(task runner, torch threads per unit, description)`` for ``compare``'s settings."""
    cfg, cores = params.compare, os.cpu_count() or 1
    if cfg.sequential:
        return ThreadPoolTaskRunner(max_workers=1), cfg.torch_threads or cores, "sequential"
    from prefect_dask import DaskTaskRunner

    if cfg.address is not None:
        check_dask_address(cfg.address)
        return DaskTaskRunner(address=cfg.address), cfg.torch_threads or 1, f"Dask cluster at {cfg.address}"
    workers = cfg.workers or cores
    threads = cfg.torch_threads or max(1, cores // workers)
    import logging

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                            "dashboard_address": None, "silence_logs": logging.WARNING})
    return runner, threads, f"Dask LocalCluster, {workers} workers x 1 thread, {threads} torch threads each"


def check_dask_address(address: str) -> None:
    """Fail within ``CONNECT_TIMEOUT_S`` seconds, naming ``address``, unless a Dask scheduler there
    answers an ``identity`` request (a port that accepts and stays silent fails too: a plain
    ``Client(address, timeout=...)`` waits on it for ever)."""
    import asyncio

    from distributed.core import rpc

    async def identity():
        async with rpc(address, timeout=CONNECT_TIMEOUT_S) as scheduler:
            return await scheduler.identity()

    try:
        answer = asyncio.run(asyncio.wait_for(identity(), CONNECT_TIMEOUT_S))
    except (OSError, TimeoutError, asyncio.TimeoutError) as err:
        raise ConfigError(f"compare.address {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s "
                          f"({type(err).__name__}); start one (`dask scheduler`) or drop --address") from None
    if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
        raise ConfigError(f"compare.address {address}: answered, but is not a Dask scheduler ({answer!r:.80})")


# ---- cells: one learning rate per (task, method), every seed at it -------------------------------------

def choose_lr(scores: dict[float, list[float | None]]) -> float | None:
    """``scores[lr]`` = each seed's dev quality at full depth (None: the unit failed) -> the rate
    with the best mean over the seeds it trained, preferring rates every seed trained; ties go to
    the smaller rate. None when no unit trained."""
    ranked = [(all(v is not None for v in vs), sum(v for v in vs if v is not None) / sum(v is not None for v in vs), -lr, lr)
              for lr, vs in scores.items() if any(v is not None for v in vs)]
    return max(ranked)[3] if ranked else None


def assemble_cells(grid: list[dict], results: list[UnitResult]) -> list[ComparisonCell]:
    """Unit results -> one cell per (task, method, seed), every seed of a (task, method) at the
    learning rate ``choose_lr`` picks on dev for that (task, method)."""
    units: dict[tuple, dict[int, dict[float, UnitResult]]] = defaultdict(lambda: defaultdict(dict))
    for unit, result in zip(grid, results):
        units[(unit["task"], unit["method"])][unit["seed"]][unit["lr"]] = result

    def dev(result: UnitResult | None) -> float | None:
        return None if result is None or result.summary is None else result.summary.full_dev

    cells = []
    for (task_name, method), by_seed in units.items():
        rates = sorted({lr for by_lr in by_seed.values() for lr in by_lr})
        lr = choose_lr({r: [dev(by_lr.get(r)) for by_lr in by_seed.values()] for r in rates})
        for seed, by_lr in by_seed.items():
            seconds = sum(r.seconds for r in by_lr.values())
            lr_scores = {f"{k:g}": dev(r) for k, r in by_lr.items()}
            chosen = by_lr.get(lr) if lr is not None else None
            if dev(chosen) is None:
                errors = sorted({r.error for r in ([chosen] if chosen else by_lr.values()) if r.error is not None})
                cells.append(ComparisonCell(task_name, method, seed, "failed", lr, lr_scores, seconds, "; ".join(errors)))
            else:
                cells.append(ComparisonCell(task_name, method, seed, "ok", lr, lr_scores, seconds, summary=chosen.summary,
                                            dev_score=chosen.summary.full_dev))
    return cells


def not_applicable(task_name: str, method: str, seed: int) -> ComparisonCell:
    """The n/a cell of a method that cannot do the (regression) task."""
    return ComparisonCell(task_name, method, seed, "n/a", lr=None, lr_scores={}, seconds=0.0,
                          error=f"{method} cannot do regression")


# ---- what the flow reports ----------------------------------------------------------------------

def time_by_method(cells: list[ComparisonCell]) -> dict[str, float]:
    """Seconds summed over a method's cells (static-k under ``static``), largest first."""
    total: dict[str, float] = defaultdict(float)
    for c in cells:
        total["static" if c.is_static else c.method] += c.seconds
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def build_grid(params: Params, cells_dir: Path) -> tuple[list[dict], list[tuple[Params, str]], list[ComparisonCell]]:
    """``(grid, units, n/a cells)``: one unit per task x (methods + static-k) x seed x lr, each
    with its params; a method that cannot do regression gets an n/a cell per seed on a
    regression task instead of units."""
    grid, units, na = [], [], []
    variants, data_dir = comparison_methods(params), Layout.from_params(params).data
    for task_name in compare_tasks(params):
        regression = load_meta(data_dir, task_name)["spec"]["label_type"] == "float"
        for variant in variants:
            method = variant.name
            for seed in params.compare.seeds:
                if regression and not variant.regression:
                    na.append(not_applicable(task_name, method, seed))
                    continue
                for lr in params.compare.lr_grid:
                    grid.append({"task": task_name, "method": method, "seed": seed, "lr": lr})
                    units.append((unit_params(params, cells_dir, task_name, seed, lr), method))
    return grid, units, na


def report_cells(cells: list[ComparisonCell], root: Path) -> list[ComparisonCell]:
    """Cells as the DVC-tracked report keeps them: no wall time of the run (``timing.json`` has
    it) and checkpoints and per-row test predictions relative to the project, so a re-run from the
    cache or a moved project writes the same report."""
    def portable(summary: CellSummary | None) -> CellSummary | None:
        if summary is None:
            return summary
        where = {k: portable_path(Path(getattr(summary, k)), root) for k in ("checkpoint", "test_rows") if getattr(summary, k)}
        return replace(summary, **where)

    return [replace(c, seconds=None, summary=portable(c.summary)) for c in cells]


def grid_timing(wall: float, how: str, results: list[UnitResult], cells: list[ComparisonCell]) -> dict:
    """``timing.json``: the run's wall-clock, its runner, unit seconds in all, by method and by cell."""
    return {"wall_seconds": wall, "runner": how, "units": len(results), "unit_seconds": sum(r.seconds for r in results),
            "by_method_seconds": time_by_method(cells),
            "cells": [{"task": c.task, "method": c.method, "seed": c.seed, "seconds": c.seconds} for c in cells]}
