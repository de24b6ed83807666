"""Budgeted comparison runs (flows/compare_grid.py): units start in priority order, none once the
budget is spent, the report says what is missing, and a second run finishes the grid with the same
report as one unbudgeted run. Pure: fake units on a fake clock (no training, no Prefect)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import flows.compare_grid as grid_module
from flows.compare_grid import assemble_cells, later_seed_grid, start_within_budget
from tasks.reports.cells import CellSummary, UnitResult
from tasks.reports.comparison import compare_report


class FakeClock:
    """Minutes that pass only when a unit runs."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_start_within_budget_starts_in_order_and_none_after_the_budget():
    clock, started = FakeClock(), []

    def start(i):
        started.append(i)
        return i

    def finish(i):
        clock.now += 10.0  # every job takes 10 s
        return f"done {i}"

    out = start_within_budget(6, start, finish, 25.0, 1, clock)
    # jobs 0, 1, 2 start at 0, 10, 20 s; at 30 s the budget of 25 s is spent: 3, 4, 5 never start
    assert started == [0, 1, 2] and out == ["done 0", "done 1", "done 2", None, None, None]
    clock.now, started[:] = 0.0, []
    assert start_within_budget(6, start, finish, None, 2, clock) == [f"done {i}" for i in range(6)]
    assert started == list(range(6))


def summary(dev: float) -> CellSummary:
    point = {"threshold": None, "quality": dev, "layer_speedup": 1.0, "flops_speedup": 1.0}
    return CellSummary("accuracy", 6, dev, dev, {"entropy": [{"dev": point, "test": point}]}, {}, "ckpt")


@pytest.fixture()
def tiny_grid(monkeypatch, tmp_path):
    """A 2 tasks x 2 methods x 2 seeds x 2 rates grid whose units 'train' by looking up a table,
    remembered in a cache like the real units' (a second run of a unit is a hit and costs nothing)."""
    params = SimpleNamespace(compare=SimpleNamespace(seeds=[1, 2], lr_grid=[0.1, 0.2], budget="25s"))
    cache, runs, clock = {}, [], FakeClock()
    monkeypatch.setattr(grid_module, "clock", clock)
    monkeypatch.setattr(grid_module, "unit_params", lambda params, cells_dir, task, seed, lr: (task, seed, lr))

    def first_seed_grid(params, cells_dir):
        grid = [{"task": t, "method": m, "seed": 1, "lr": lr} for t in ("a", "b") for m in ("x", "y") for lr in (0.1, 0.2)]
        return grid, [((u["task"], 1, u["lr"]), u["method"]) for u in grid], []

    monkeypatch.setattr(grid_module, "first_seed_grid", first_seed_grid)

    def run(units, budget_s):
        def start(i):
            (task, seed, lr), method = units[i]
            key = (task, method, seed, lr)
            if key not in cache:
                clock.now += 10.0  # a trained unit costs 10 s, a cache hit nothing
                runs.append(key)
                cache[key] = UnitResult(summary(50 + 10 * lr + (5 if method == "y" else 0) + seed), None, 10.0)
            return cache[key]

        return start_within_budget(len(units), start, lambda r: r, budget_s, 1, clock)

    def one_run(budget_s):
        clock.now = 0.0
        grid, results, na = grid_module.build_grid(params, tmp_path, budget_s, run)
        cells = assemble_cells(grid, results, params.compare.seeds)
        return cells, grid_module.run_notes(SimpleNamespace(compare=SimpleNamespace(
            seeds=[1, 2], lr_grid=[0.1, 0.2], budget="25s")), cells)

    return SimpleNamespace(one_run=one_run, runs=runs, cache=cache)


def test_a_budget_stops_the_grid_half_way_and_the_next_run_finishes_it(tiny_grid, tmp_path):
    cells, notes = tiny_grid.one_run(25.0)
    # priority order: the first seed's units, task a before b, method x before y, rate by rate
    assert tiny_grid.runs == [("a", "x", 1, 0.1), ("a", "x", 1, 0.2), ("a", "y", 1, 0.1)]
    status = {(c.task, c.method, c.seed): c.status for c in cells}
    assert status[("a", "x", 1)] == "ok" and status[("a", "x", 2)] == "pending"  # no second seed before every first
    assert {s for k, s in status.items() if k != ("a", "x", 1)} == {"pending"}
    assert any("INCOMPLETE: 7 of 8 cells pending" in n for n in notes)
    budgeted = compare_report(cells, (1.0,), out_dir=tmp_path / "half")
    assert "pending: not run yet" in budgeted["table"]

    for _ in range(3):  # the nightly schedule: the same budget again, each run goes on from the cache
        cells, notes = tiny_grid.one_run(25.0)
    assert all(c.status == "ok" for c in cells) and not any("INCOMPLETE" in n for n in notes)
    # the first seed tried both rates; the second seed trained at the chosen one only
    assert len(tiny_grid.runs) == 8 + 4 and len(set(tiny_grid.runs)) == len(tiny_grid.runs)
    assert all(c.lr == 0.2 for c in cells)  # the larger rate scores higher on dev here

    finished = compare_report(cells, (1.0,), out_dir=tmp_path / "continued")
    tiny_grid.cache.clear()
    unbudgeted, _ = tiny_grid.one_run(None)
    once = compare_report(unbudgeted, (1.0,), out_dir=tmp_path / "once")
    assert finished["table"] == once["table"]
    assert json.loads(open(finished["json"]).read()) == json.loads(open(once["json"]).read())


def test_later_seeds_wait_for_the_rate_of_their_first_seed(monkeypatch):
    params = SimpleNamespace(compare=SimpleNamespace(seeds=[1, 2, 3]))
    monkeypatch.setattr(grid_module, "unit_params", lambda params, cells_dir, task, seed, lr: (task, seed, lr))
    grid, units = later_seed_grid(params, None, {("a", "x"): 0.2, ("a", "y"): None}, [("a", "x"), ("a", "y"), ("b", "x")])
    # seed after seed; a (task, method) that trained at no rate or whose rate is not chosen yet gets no unit
    assert [(u["seed"], u["task"], u["method"], u["lr"]) for u in grid] == [(2, "a", "x", 0.2), (3, "a", "x", 0.2)]
