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
            seeds=[1, 2], lr_grid=[0.1, 0.2], budget="25s", unit_records=None)), cells)

    return SimpleNamespace(one_run=one_run, runs=runs, cache=cache)


def test_a_budget_stops_the_grid_half_way_and_the_next_run_finishes_it(tiny_grid, tmp_path):
    cells, notes = tiny_grid.one_run(25.0)
    # priority order: the first seed's units, task a before b, method x before y, rate by rate
    assert tiny_grid.runs == [("a", "x", 1, 0.1), ("a", "x", 1, 0.2), ("a", "y", 1, 0.1)]
    status = {(c.task, c.method, c.seed): c.status for c in cells}
    assert status[("a", "x", 1)] == "ok" and status[("a", "x", 2)] == "pending"  # no second seed before every first
    assert {s for k, s in status.items() if k != ("a", "x", 1)} == {"pending"}
    incomplete = next(n for n in notes if n.startswith("INCOMPLETE"))
    assert incomplete.startswith("INCOMPLETE: 7 of 8 cells pending (compare.budget 25s spent before they started): "
                                 "a seed 1 (y); a seed 2 (all 2 methods); b seed 1 (all 2 methods); b seed 2 (all 2 methods).")
    assert incomplete.endswith("from the cache.")
    budgeted = compare_report(cells, (1.0,), out_dir=tmp_path / "half")
    assert "| y | pending (seeds 1, 2) |" in budgeted["table"]  # the reason is the INCOMPLETE note's, said once
    overall = budgeted["table"].split("## Overall")[1]
    assert "| y | pending | pending |" in overall and "failed" not in overall  # not run yet is not failed

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


def test_a_unit_records_its_cost_only_when_it_computes(monkeypatch, tmp_path, capsys):
    """The cost ledger across budgeted runs: a unit whose steps write results records its seconds;
    the same unit served from the cache, or one computed before the ledger existed, records nothing;
    a recorded cost is replaced by a larger one only."""
    from config.params import load_params
    from flows.compare_grid import COSTS_DIR, read_ledger, run_unit, unit_params

    def read_unit_costs(folder):
        return {name: entry["seconds"] for name, entry in read_ledger(folder).items()}

    done = set()

    def fake_method(ctx, name):
        if name not in done:  # 'computes': a step writes its result file
            done.add(name)
            out = tmp_path / "profile" / "cells" / "lr-0.1" / name
            out.mkdir(parents=True, exist_ok=True)
            (out / "result.json").write_text("{}")
        return summary(60.0)

    variants = {m: SimpleNamespace(run=lambda ctx, m=m: fake_method(ctx, m)) for m in ("x", "y")}
    monkeypatch.setattr(grid_module, "comparison_variants", lambda params: variants)
    monkeypatch.setattr(grid_module, "RunContext", SimpleNamespace(from_params=lambda params: None))
    (tmp_path / "params.yaml").write_text("seed: 7\n")
    params = unit_params(load_params(tmp_path / "params.yaml"), tmp_path / "profile" / "cells", "sst2", 42, 0.1)
    ledger = tmp_path / "profile" / COSTS_DIR

    first = run_unit.fn(params, "x", 1)
    costs = read_unit_costs(ledger)
    assert list(costs) == ["sst2--x--seed-42--lr-0.1"] and costs["sst2--x--seed-42--lr-0.1"] == first.seconds
    run_unit.fn(params, "x", 1)  # a cache hit: nothing written, the cost stays the first run's
    assert read_unit_costs(ledger) == costs
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[compare] sst2 / x")]
    assert "computed in" in said[0] and "from the cache in" in said[1]  # one progress line per unit

    done.add("y")  # computed by a run before the ledger existed: served from the cache, never measured
    run_unit.fn(params, "y", 1)
    assert read_unit_costs(ledger) == costs

    grid_module.record_unit_cost(ledger, "sst2--x--seed-42--lr-0.1", first.seconds / 2)
    assert read_unit_costs(ledger) == costs  # a smaller figure never replaces a recorded cost
    grid_module.record_unit_cost(ledger, "sst2--x--seed-42--lr-0.1", 300.0)
    assert read_unit_costs(ledger)["sst2--x--seed-42--lr-0.1"] == 300.0
    (ledger / "broken.json").write_text("{not json")
    assert "broken" not in read_unit_costs(ledger)


def test_cost_summary_counts_every_unit_of_the_grid_and_sums_the_measured_ones():
    from flows.compare_grid import cost_summary, grid_units, unit_name
    from tasks.reports.cells import ComparisonCell

    params = SimpleNamespace(compare=SimpleNamespace(seeds=[1, 2, 3], lr_grid=[0.1, 0.2]))
    cells = [ComparisonCell("a", "x", 1, "ok", 0.2, {}, 0.0, summary=summary(60.0), dev_score=60.0),
             ComparisonCell("a", "x", 2, "ok", 0.2, {}, 0.0, summary=summary(60.0), dev_score=60.0),
             ComparisonCell("a", "x", 3, "pending", 0.2, {}, 0.0, "not run yet"),
             ComparisonCell("a", "static-2", 1, "pending", None, {}, 0.0, "not run yet"),
             ComparisonCell("b", "x", 1, "n/a", None, {}, 0.0, "x cannot do regression")]
    units = grid_units(params, cells)
    # a/x: two rates on seed 1 and the chosen rate on seeds 2 and 3; a/static-2: its rate not chosen yet; b/x: n/a
    assert units == [("x", unit_name("a", "x", 1, 0.1)), ("x", unit_name("a", "x", 1, 0.2)),
                     ("x", unit_name("a", "x", 2, 0.2)), ("x", unit_name("a", "x", 3, 0.2)),
                     ("static-2", unit_name("a", "static-2", 1, 0.1)), ("static-2", unit_name("a", "static-2", 1, 0.2)),
                     ("static-2", "a--static-2--seed-2--lr-?"), ("static-2", "a--static-2--seed-3--lr-?")]
    costs = {unit_name("a", "x", 1, 0.1): 100.0, unit_name("a", "x", 1, 0.2): 200.0, unit_name("a", "x", 2, 0.2): 400.0,
             unit_name("a", "static-2", 1, 0.1): 30.0, "elsewhere--x--seed-1--lr-0.1": 999.0}
    cost = cost_summary(units, costs)
    assert cost["units"] == 8 and cost["units_measured"] == 4 and cost["minutes_measured"] == 730.0 / 60
    assert cost["by_method"]["x"] == {"units": 4, "units_measured": 3, "median_minutes": 200.0 / 60, "minutes_measured": 700.0 / 60}
    assert cost["by_method"]["static"] == {"units": 4, "units_measured": 1, "median_minutes": 0.5, "minutes_measured": 0.5}


def test_the_report_counts_the_shared_trainings_of_its_own_tasks():
    from flows.compare_grid import shared_in_tasks

    cells = "artifacts/compare/standard/cells"
    index = {"k1": [f"{cells}/lr-0.0001/sst2/seed-42/static/first-6", f"{cells}/lr-0.0001/sst2/seed-42/hashee/reference"],
             "k2": [f"{cells}/lr-0.0001/mrpc/seed-42/static/first-6"],
             "k3": [f"{cells}/lr-0.0003/sst2/seed-43/static/first-6", f"{cells}/lr-0.0003/mrpc/seed-43/static/first-6"]}
    assert shared_in_tasks(index, ["sst2"]) == {"k1": index["k1"], "k3": index["k3"][:1]}
    assert shared_in_tasks(index, ["sst2", "mrpc"]) == index
    assert shared_in_tasks(index, ["stsb"]) == {}


def test_the_cost_table_names_the_machine_of_each_measured_unit():
    from flows.compare_grid import cost_summary
    from tasks.reports.site import comparison_cost_markdown

    units = [("joint", "a"), ("joint", "b"), ("static-1", "c"), ("static-2", "d")]
    cost = cost_summary(units, {"a": 60.0, "b": 120.0, "c": 30.0}, {"a": "Intel", "b": "AMD", "c": "Intel"})
    assert cost["machines"] == {"AMD": 1, "Intel": 2}  # the unmeasured unit d counts nowhere
    text = comparison_cost_markdown({"cost": cost, "runner": "sequential", "machine": "this one"})
    assert text.startswith("Measured on AMD (1 unit); Intel (2 units); runner: sequential. 3 of 4 units")
