"""The grid of ``exitflow compare`` (``flows.compare``): task x (methods + static-k) x seed x
learning rate, its units run by a task runner, and the finished units assembled into cells.

**Order, learning rate and budget.** Units start in a fixed priority order: every (task, method)
on the first seed, at every ``compare.lr_grid`` rate (tasks in order, then methods, then rates);
the rate with the best dev quality at full depth is chosen per (task, method) on that seed and
reused for every other seed, which then trains at that rate only, seed after seed. Under
``compare.budget`` no unit starts once the budget is spent (a running one finishes): the cells
not run are reported ``pending``, and the next run, the same command or the nightly schedule,
serves the finished units from the cache and goes on. ``clock`` is the budget's clock (tests
replace it).

**Units.** A unit is one (task, method, seed, learning rate): ``run_unit`` runs the method's
registered comparison cell (``flows.registry``) on the unit's own params, whose ``artifacts_dir`` is
``artifacts/compare/<profile>/cells/lr-<lr>``, so units never share an output folder. The
steps inside are the cached tasks of each method, so a re-run with nothing changed is served
from the cache. A unit that raises is reported ``failed`` with its error; the others go on. A
method that cannot do regression is ``n/a`` on a regression task and runs nothing.

**Unit records.** With ``compare.unit_records`` set, every unit that trains is also kept in that
folder, meant to be committed (``flows.compare_records``), and ``serve_recorded`` serves each unit
whose record matches it before it starts any other: a new machine, whose cache is empty, goes on
where the last one stopped, and a spent budget does not turn a recorded unit into a pending cell
(unless its rate is not chosen yet: a first-seed unit of its (task, method) has not run).

**Cost per unit.** A unit that computes something (a step under its artifacts tree writes its
``result.json``) records its wall seconds and machine in ``unit-costs/<unit>.json`` (under
``compare.unit_records`` when set, else ``<profile>/``), beside the grid and outside the DVC-tracked
report; a unit served from the cache or a record (about a second) records nothing,
so the ledger keeps each unit's cost across budgeted runs, and ``timing.json`` sums it per method.
A recorded cost is replaced by a larger one only (under Dask a cache hit can coincide with another
unit writing in the same learning-rate folder and pass for a computation). Shared trainings are
paid by the first unit that needs them.

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

import json
import os
import statistics
import time
import traceback
from collections import defaultdict, deque
from dataclasses import replace
from pathlib import Path

from typing import Any, Callable

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.compare_records import read_record, records_dir, unit_key, write_record
from flows.context import RunContext
from flows.layout import Layout
from flows.runtime import machine_description
from flows.registry import comparison_methods, comparison_variants
from config.params import ConfigError, Params
from tasks.data import load_meta
from tasks.io import RESULT_FILE, atomic_write_json, portable_path
from tasks.reports.cells import CellSummary, ComparisonCell, UnitResult, is_static

CONNECT_TIMEOUT_S = 5
clock: Callable[[], float] = time.monotonic  # the budget's clock, in seconds
PENDING_ERROR = "not run yet: the budget was spent before it started (run again to continue from the cache)"


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


COSTS_DIR = "unit-costs"  # <profile>/unit-costs/: one JSON per unit that computed (see the module docstring)


def unit_name(task: str, method: str, seed: int, lr: float | None) -> str:
    """A unit's file name stem in ``unit-costs/``: ``sst2--joint--seed-42--lr-0.0001`` (``lr-?``: a
    later seed's unit whose rate is not chosen yet)."""
    return f"{task}--{method}--seed-{seed}--lr-{'?' if lr is None else f'{lr:g}'}"


def ledger_dir(params: Params, profile_root: Path) -> Path:
    """The cost ledger: ``<compare.unit_records>/unit-costs`` when the profile keeps records (it
    travels with them), else ``<profile>/unit-costs``."""
    kept = params.compare.unit_records
    return (params.path(kept) if kept is not None else Path(profile_root)) / COSTS_DIR


def costs_dir(params: Params) -> Path:
    """The cost ledger of a unit's params (``unit_params``: artifacts in ``<profile>/cells/lr-<lr>``)."""
    return ledger_dir(params, Path(params.artifacts_dir).parent.parent)


def wrote_results_since(folder: Path, since: float) -> bool:
    """Whether a step under ``folder`` wrote its ``result.json`` at or after ``since`` (``time.time()``)."""
    return any(p.stat().st_mtime >= since for p in Path(folder).rglob(RESULT_FILE))


def record_unit_cost(folder: Path, name: str, seconds: float, machine: str | None = None) -> None:
    """Keep ``seconds`` (measured on ``machine``) as unit ``name``'s cost unless a larger one is
    recorded (atomic write)."""
    path = Path(folder) / f"{name}.json"
    try:
        old = json.loads(path.read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        old = None
    if old is None or seconds > old:
        atomic_write_json(path, {"seconds": seconds, **({} if machine is None else {"machine": machine})})


def read_ledger(folder: Path) -> dict[str, dict]:
    """``{unit name: {"seconds", "machine"}}`` of the ledger (machine None when the entry names none;
    an unreadable entry is skipped: the unit counts as unmeasured)."""
    entries = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            entries[path.stem] = {"seconds": float(entry["seconds"]), "machine": entry.get("machine")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return entries


def unit_record(params: Params, method: str) -> tuple[Path, str] | None:
    """``(record folder, key)`` of a unit (``flows.compare_records``); None when the profile keeps none."""
    where = records_dir(params)
    if where is None:
        return None
    module = comparison_variants(params)[method].method.flows_module
    return where / unit_name(params.train.task, method, params.seed, params.train.lr), unit_key(params, module, method)


def serve_recorded(units: list[tuple[Params, str]], run_rest: Callable[[list, list], list],
                   budget_s: float | None) -> list[UnitResult | None]:
    """Results in ``units``' order: each unit with a matching record served from it, the others from
    ``run_rest(units, records)`` (with each unit's ``unit_record``, computed here once, so a unit
    records under the key it was looked up by), not called when nothing is left or the budget is
    spent (``budget_s`` 0). None for a unit never started."""
    records = [unit_record(p, method) for p, method in units]
    results: list[UnitResult | None] = [None if r is None else read_record(*r) for r in records]
    todo = [i for i, r in enumerate(results) if r is None]
    if len(todo) < len(units):
        print(f"[compare] {len(units) - len(todo)} of {len(units)} units served from their records in "
              f"{records_dir(units[0][0])}", flush=True)
    ran = (run_rest([units[i] for i in todo], [records[i] for i in todo])
           if todo and (budget_s is None or budget_s > 0) else [None] * len(todo))
    pending = iter(ran)
    return [r if r is not None else next(pending) for r in results]


@task(name="compare_unit", cache_policy=NO_CACHE)  # the method's steps inside are cached
def run_unit(params: Params, method: str, threads: int, record: tuple[Path, str] | None = None) -> UnitResult:
    """One (task, method, seed, lr): its cell summary or its error; never raises for a method's
    failure, so one bad unit does not stop the grid. Seconds include cache hits; a unit that
    computed records its seconds in the cost ledger (``record_unit_cost``); given ``record``
    (``unit_record``), a unit that trained is kept there and its rows are read from there."""
    import torch

    torch.set_num_threads(threads)
    began_wall, start = time.time(), time.perf_counter()
    summary, error = None, None
    try:
        summary = comparison_variants(params)[method].run(RunContext.from_params(params))
    except Exception as err:  # reported in the table; the traceback goes to the Prefect log
        print(f"[compare] {params.train.task}/{method}/seed-{params.seed}/lr-{params.train.lr:g} failed:\n"
              + "".join(traceback.format_exception(err)))
        error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
    seconds = time.perf_counter() - start
    name = unit_name(params.train.task, method, params.seed, params.train.lr)
    computed = error is None and wrote_results_since(params.artifacts_dir, began_wall)
    machine = machine_description(params.device) if computed or record else None
    if computed:
        record_unit_cost(costs_dir(params), name, seconds, machine)
    if record is not None and error is None and summary.test_rows:
        try:  # the report then reads the rows from the record, as a machine without this cache does
            write_record(*record, UnitResult(summary, None, seconds), machine, threads)
            summary = read_record(*record).summary
        except (OSError, AttributeError) as err:  # the unit's result stands; only its record is missing
            print(f"[compare] {name}: its record in {record[0]} was not written ({type(err).__name__}: {err}); "
                  "the next run computes or serves it from the cache again", flush=True)
    how = "failed" if error else "computed" if computed else "from the cache"
    print(f"[compare] {name.replace('--', ' / ')}: {how} in {seconds / 60:.1f} min", flush=True)
    return UnitResult(summary, error, seconds)


def start_within_budget(count: int, start: Callable[[int], Any], finish: Callable[[Any], Any], budget_s: float | None,
                        slots: int, now: Callable[[], float]) -> list:
    """Start jobs ``0..count-1`` in that order, at most ``slots`` running at once (waiting for the
    oldest to finish), and none once ``budget_s`` seconds of ``now()`` have passed since the call
    (None: no budget). Returns ``finish(start(i))`` per job, None for a job never started."""
    began, results, running = now(), [None] * count, deque()
    for i in range(count):
        while len(running) >= slots:
            j, handle = running.popleft()
            results[j] = finish(handle)
        if budget_s is not None and now() - began >= budget_s:
            break
        running.append((i, start(i)))
    for j, handle in running:
        results[j] = finish(handle)
    return results


def _unit_result(future) -> UnitResult:
    result = future.result(raise_on_failure=False)  # a unit lost by Dask (killed worker, memory) fails its cell
    return (UnitResult(None, f"{type(result).__name__}: {result}".splitlines()[0][:300], 0.0)
            if isinstance(result, BaseException) else result)


@flow(name="compare_grid")
def run_grid(units: list[tuple[Params, str]], threads: int, budget_s: float | None = None,
             slots: int | None = None, inline: bool = False, records: list | None = None) -> list[UnitResult | None]:
    """Submit the units to the flow's task runner in order, ``slots`` at a time (None: all at once),
    none once ``budget_s`` seconds of ``clock`` are spent; results in ``units``' order, None for a
    unit never started. ``records``: each unit's record (``unit_record``) to keep it in; the
    recorded units are served before, by ``serve_recorded``. ``inline`` (``compare.sequential``):
    each unit runs in this thread, one after another, so SIGTERM or Ctrl-C stops the unit under way
    at once (in a worker thread it ran on to its end, up to half an hour, while the main thread
    waited)."""
    records = records or [None] * len(units)
    if inline:
        return start_within_budget(len(units), lambda i: run_unit(*units[i], threads, records[i]), lambda r: r,
                                   budget_s, 1, clock)
    return start_within_budget(len(units), lambda i: run_unit.submit(*units[i], threads, records[i]), _unit_result,
                               budget_s, slots or max(1, len(units)), clock)


def unit_threads(params: Params) -> int:
    """Torch threads per unit: ``compare.torch_threads``, else all cores when sequential, 1 per unit on
    a remote Dask cluster, cores // workers on the local one."""
    cfg, cores = params.compare, os.cpu_count() or 1
    if cfg.torch_threads:
        return cfg.torch_threads
    if cfg.sequential:
        return cores
    return 1 if cfg.address is not None else max(1, cores // (cfg.workers or cores))


def task_runner(params: Params):
    """``(task runner, torch threads per unit, description)`` for ``compare``'s settings."""
    cfg, cores, threads = params.compare, os.cpu_count() or 1, unit_threads(params)
    if cfg.sequential:
        return ThreadPoolTaskRunner(max_workers=1), threads, "sequential"
    from prefect_dask import DaskTaskRunner

    if cfg.address is not None:
        check_dask_address(cfg.address)
        return DaskTaskRunner(address=cfg.address), threads, f"Dask cluster at {cfg.address}"
    workers = cfg.workers or cores
    import logging

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                            "dashboard_address": None, "silence_logs": logging.WARNING})
    return runner, threads, f"Dask LocalCluster, {workers} workers x 1 thread, {threads} torch threads each"


def runner_slots(params: Params) -> int:
    """How many units run at once: 1 sequential, else ``compare.workers`` (default: one per core)."""
    return 1 if params.compare.sequential else params.compare.workers or os.cpu_count() or 1


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


# ---- cells: the learning rate chosen on the first seed, every seed at it --------------------------

def choose_lr(scores: dict[float, list[float | None]]) -> float | None:
    """``scores[lr]`` = dev quality at full depth of the units that chose (the first seed's; None: the
    unit failed) -> the rate with the best mean over the units that trained, preferring rates
    every unit trained; ties go to the smaller rate. None when no unit trained."""
    ranked = [(all(v is not None for v in vs), sum(v for v in vs if v is not None) / sum(v is not None for v in vs), -lr, lr)
              for lr, vs in scores.items() if any(v is not None for v in vs)]
    return max(ranked)[3] if ranked else None


def _dev(result: UnitResult | None) -> float | None:
    return None if result is None or result.summary is None else result.summary.full_dev


def chosen_rates(grid: list[dict], results: list[UnitResult | None]) -> dict[tuple[str, str], float | None]:
    """Per (task, method) of the first seed's units: the rate ``choose_lr`` picks on their dev quality;
    absent while one of them has not run (the budget stopped it)."""
    by_key: dict[tuple, dict[float, UnitResult | None]] = defaultdict(dict)
    for unit, result in zip(grid, results):
        by_key[(unit["task"], unit["method"])][unit["lr"]] = result
    return {key: choose_lr({lr: [_dev(r)] for lr, r in by_lr.items()})
            for key, by_lr in by_key.items() if all(r is not None for r in by_lr.values())}


def assemble_cells(grid: list[dict], results: list[UnitResult | None], seeds: list[int]) -> list[ComparisonCell]:
    """Unit results -> one cell per (task, method, seed) of ``seeds``: each at the rate chosen on the
    first seed (``chosen_rates``). A cell whose unit has not run (its first seed's units unfinished,
    or its own unit not started) is ``pending``; one whose unit failed is ``failed``."""
    units: dict[tuple, dict[int, dict[float, UnitResult | None]]] = defaultdict(lambda: defaultdict(dict))
    first = [(u, r) for u, r in zip(grid, results) if u["seed"] == seeds[0]]
    for unit, result in zip(grid, results):
        units[(unit["task"], unit["method"])][unit["seed"]][unit["lr"]] = result
    rates = chosen_rates([u for u, _ in first], [r for _, r in first])
    cells = []
    for (task_name, method), by_seed in units.items():
        key = (task_name, method)
        for seed in seeds:
            by_lr = by_seed.get(seed, {})
            lr = rates.get(key)
            seconds = sum(r.seconds for r in by_lr.values() if r is not None)
            lr_scores = {f"{k:g}": _dev(r) for k, r in by_lr.items() if r is not None}
            chosen = by_lr.get(lr) if lr is not None else None
            if key not in rates or (lr is not None and chosen is None):
                cells.append(ComparisonCell(task_name, method, seed, "pending", lr, lr_scores, seconds, PENDING_ERROR))
            elif _dev(chosen) is None:
                tried = [chosen] if chosen else [r for r in by_seed[seeds[0]].values()]
                errors = sorted({r.error for r in tried if r is not None and r.error is not None})
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


def first_seed_grid(params: Params, cells_dir: Path) -> tuple[list[dict], list[tuple[Params, str]], list[ComparisonCell]]:
    """``(grid, units, n/a cells)`` of the first seed, in priority order (tasks, then methods and
    static-k, then ``lr_grid`` rates), each unit with its params; a method that cannot do regression
    gets an n/a cell per seed on a regression task instead of units."""
    grid, units, na = [], [], []
    variants, data_dir, seed = comparison_methods(params), Layout.from_params(params).data, params.compare.seeds[0]
    for task_name in compare_tasks(params):
        regression = load_meta(data_dir, task_name)["spec"]["label_type"] == "float"
        for variant in variants:
            if regression and not variant.regression:
                na.extend(not_applicable(task_name, variant.name, s) for s in params.compare.seeds)
                continue
            for lr in params.compare.lr_grid:
                grid.append({"task": task_name, "method": variant.name, "seed": seed, "lr": lr})
                units.append((unit_params(params, cells_dir, task_name, seed, lr), variant.name))
    return grid, units, na


def later_seed_grid(params: Params, cells_dir: Path, rates: dict[tuple[str, str], float | None],
                    order: list[tuple[str, str]]) -> tuple[list[dict], list[tuple[Params, str]]]:
    """``(grid, units)`` of the other seeds, seed after seed, each (task, method) of ``order`` at its
    chosen rate (none for a (task, method) whose rate is not chosen yet or that trained at no rate)."""
    grid, units = [], []
    for seed in params.compare.seeds[1:]:
        for task_name, method in order:
            lr = rates.get((task_name, method))
            if lr is not None:
                grid.append({"task": task_name, "method": method, "seed": seed, "lr": lr})
                units.append((unit_params(params, cells_dir, task_name, seed, lr), method))
    return grid, units


def build_grid(params: Params, cells_dir: Path, budget_s: float | None = None, run=None) -> tuple[list[dict], list, list[ComparisonCell]]:
    """Run the whole grid within ``budget_s`` seconds of ``clock``: the first seed's units, then the
    other seeds' at the rates chosen on it. ``run(units, budget_s)`` runs units (``run_grid``
    with the flow's task runner). Returns ``(grid, results, n/a cells)`` with results in grid order
    (None: not started)."""
    began = clock()
    grid, units, na = first_seed_grid(params, cells_dir)
    results = run(units, budget_s)
    order = list(dict.fromkeys((u["task"], u["method"]) for u in grid))
    later, later_units = later_seed_grid(params, cells_dir, chosen_rates(grid, results), order)
    left = None if budget_s is None else max(0.0, budget_s - (clock() - began))
    if later_units:  # a spent budget (0 left) starts none of them; ``run`` still serves the recorded ones
        results += run(later_units, left)
    return grid + later, results, na


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


def shared_in_tasks(index: dict[str, list[str]], tasks: list[str]) -> dict[str, list[str]]:
    """A shared-training index (``tasks.caching.shared_index``) restricted to the folders of ``tasks``'
    units (``cells/lr-<lr>/<task>/...``), keys no such folder asked for left out: a report counts the
    trainings of the tasks it shows."""
    def task_of(folder: str) -> str | None:
        parts = folder.split("/")
        return next((parts[i + 1] for i in range(len(parts) - 1) if parts[i].startswith("lr-")), None)

    kept = {key: [f for f in asked if task_of(f) in tasks] for key, asked in index.items()}
    return {key: asked for key, asked in kept.items() if asked}


def run_notes(params: Params, cells: list[ComparisonCell], shared: dict | None = None) -> list[str]:
    """The report's sentences on how this run chose and how far it got (no times: the report is
    reproducible); ``shared``: ``tasks.caching.shared_counts`` of the grid's shared trainings."""
    seeds = params.compare.seeds
    notes = [f"Learning rate: per (task, method), chosen on seed {seeds[0]} from "
             f"{', '.join(f'{lr:g}' for lr in params.compare.lr_grid)} (best dev quality at full depth) and reused "
             f"for {'the other seeds' if len(seeds) > 1 else 'no other seed'} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: "
             f"{', '.join(map(str, seeds))})."]
    if shared and shared["requested"]:
        notes.append(f"Shared trainings: {shared['requested']} model folders asked for a model trained with the "
                     f"same inputs and code as another's (the single-exit full model: static-L and HashEE's "
                     f"reference); {shared['trained']} were trained, {shared['requested'] - shared['trained']} saved.")
    pending = [c for c in cells if c.status == "pending"]
    if pending:
        notes.append(f"INCOMPLETE: {len(pending)} of {len(cells)} cells pending (compare.budget {params.compare.budget} "
                     f"spent before they started): {_pending_text(cells)}. Run the same command again to continue from "
                     "the cache" + (" and the unit records." if params.compare.unit_records is not None else "."))
    return notes


def _pending_text(cells: list[ComparisonCell]) -> str:
    """Every pending cell, grouped by (task, seed) in grid order: ``mrpc seed 43 (all 14 methods)``
    when none of that seed's cells ran, else the pending methods named."""
    runnable: dict[tuple, list[str]] = {}
    pending: dict[tuple, list[str]] = {}
    for c in cells:
        if c.status != "n/a":
            runnable.setdefault((c.task, c.seed), []).append(c.method)
        if c.status == "pending":
            pending.setdefault((c.task, c.seed), []).append(c.method)
    tasks, seeds = list(dict.fromkeys(t for t, _ in runnable)), list(dict.fromkeys(s for _, s in runnable))
    groups = sorted(pending.items(), key=lambda kv: (tasks.index(kv[0][0]), seeds.index(kv[0][1])))
    return "; ".join(f"{task} seed {seed} " + (f"(all {len(methods)} methods)" if methods == runnable[task, seed]
                                               else f"({', '.join(methods)})") for (task, seed), methods in groups)


def grid_units(params: Params, cells: list[ComparisonCell]) -> list[tuple[str, str]]:
    """``(method, unit name)`` of every unit the whole grid runs: per (task, method) that is not n/a,
    each ``lr_grid`` rate on the first seed and the chosen rate on each other seed (a rate not
    chosen yet: ``lr-?``)."""
    seeds, rates = params.compare.seeds, {(c.task, c.method): c.lr for c in cells if c.seed == params.compare.seeds[0]}
    units = []
    for (task_name, method) in dict.fromkeys((c.task, c.method) for c in cells if c.status != "n/a"):
        units += [(method, unit_name(task_name, method, seeds[0], lr)) for lr in params.compare.lr_grid]
        units += [(method, unit_name(task_name, method, s, rates.get((task_name, method)))) for s in seeds[1:]]
    return units


def cost_summary(units: list[tuple[str, str]], costs: dict[str, float], machines: dict[str, str | None] | None = None) -> dict:
    """The measured cost of the grid's ``units`` from the ledger ``costs`` (seconds): units measured
    of all, their minutes, per method (static-k under ``static``) units measured, median and
    total minutes, and (given each entry's machine, ``read_ledger``) measured units per machine."""
    by_method: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    on: dict[str, int] = defaultdict(int)
    for method, name in units:
        key = "static" if is_static(method) else method
        counts[key] += 1
        if name in costs:
            by_method[key].append(costs[name])
            on[(machines or {}).get(name) or "an unrecorded machine"] += 1
    return {"units": len(units), "units_measured": sum(len(v) for v in by_method.values()),
            **({} if machines is None else {"machines": dict(sorted(on.items()))}),
            "minutes_measured": sum(sum(v) for v in by_method.values()) / 60,
            "by_method": {m: {"units": counts[m], "units_measured": len(by_method[m]),
                              "median_minutes": statistics.median(by_method[m]) / 60 if by_method[m] else None,
                              "minutes_measured": sum(by_method[m]) / 60} for m in counts}}


def grid_timing(wall: float, how: str, results: list[UnitResult | None], cells: list[ComparisonCell],
                cost: dict | None = None, machine: str | None = None) -> dict:
    """``timing.json``: the run's wall-clock, its runner and machine, units started and not, unit
    seconds in all, by method and by cell, and the grid's ``cost`` measured so far (``cost_summary``)."""
    started = [r for r in results if r is not None]
    return {"wall_seconds": wall, "runner": how, "machine": machine, "units": len(started),
            "units_not_started": len(results) - len(started),
            "unit_seconds": sum(r.seconds for r in started),
            "by_method_seconds": time_by_method(cells),
            "cells": [{"task": c.task, "method": c.method, "seed": c.seed, "seconds": c.seconds or 0.0} for c in cells],
            "cost": cost}
