"""The comparison report (tasks/reports/comparison.py): seed aggregation, failed and n/a cells, the
timed column, the static line, styles, reproducible files and the legend's place. Tiny hand-made
cells (L = 6). The maths under it is tested in test_tradeoff.py."""

from __future__ import annotations

import json
import math

import matplotlib
import pytest

import tasks.plots as plots
from tasks.plots import method_styles
from tasks.reports.cells import ComparisonCell
from tasks.reports.comparison import compare_report, full_model_quality, pareto_figure, static_line_at, summarise_method
from tasks.reports.tables import format_mean_std
from models.tradeoff import dev_chosen_front, quality_at


def pt(dev_s: float, dev_q: float, test_s: float | None = None, test_q: float | None = None) -> dict:
    """A sweep point; test defaults to dev; FLOPs speed-up = 0.9 x layer speed-up."""
    test_s = dev_s if test_s is None else test_s
    test_q = dev_q if test_q is None else test_q
    side = lambda s, q: {"threshold": 0.1, "quality": q, "layer_speedup": s, "flops_speedup": 0.9 * s}  # noqa: E731
    return {"dev": side(dev_s, dev_q), "test": side(test_s, test_q)}


def front(*xy: tuple[float, float]) -> list[dict]:
    return [pt(x, y) for x, y in xy]


def timed(s: float, q: float, wall: float) -> dict:
    return {"threshold": 0.1, "test_quality": q, "layer_speedup": s, "flops_speedup": 0.9 * s, "wallclock_speedup": wall}


def cell(method: str, seed: int = 1, task: str = "sst2", status: str = "ok", error: str | None = None,
         series: dict | None = None, full_test: float = 90.0, tmd: dict | None = None) -> ComparisonCell:
    """A cell as ``cell.json`` holds it, read back; an ok cell's entropy curve loses 5 points at 2x, 15 at 3x."""
    if status != "ok":
        return ComparisonCell.from_json({"task": task, "method": method, "seed": seed, "status": status, "error": error,
                                         "lr": None, "lr_scores": {}, "seconds": 1.0})
    series = series if series is not None else {"entropy": front((1.0, full_test), (2.0, full_test - 5), (3.0, full_test - 15))}
    return ComparisonCell.from_json({
        "task": task, "method": method, "seed": seed, "status": status, "error": None, "metric": "accuracy",
        "num_layers": 6, "lr": 3e-4, "lr_scores": {"0.0003": full_test}, "dev_score": full_test,
        "full": {"dev": full_test, "test": full_test}, "series": series,
        "timed": tmd if tmd is not None else {"entropy": timed(2.0, full_test - 5, 1.7)}, "seconds": 1.0, "checkpoint": None})


def static(k: int, quality: float, seed: int = 1, task: str = "sst2") -> ComparisonCell:
    s = 6 / k
    return cell(f"static-{k}", seed, task, full_test=quality, series={"static": front((s, quality))},
                tmd={"static": timed(s, quality, 0.95 * s)})


def grid() -> list[ComparisonCell]:
    return [cell("joint", 1, full_test=90.0), cell("joint", 2, full_test=94.0), cell("pabee", 1, full_test=88.0),
            cell("pabee", 2, status="failed", error="CUDA out of memory | at step 3"),
            cell("leco", 1, status="n/a", error="leco cannot do regression"),
            static(6, 91.0), static(3, 86.0), static(2, 80.0),
            cell("joint", 1, task="rte", full_test=70.0), cell("pabee", 1, task="rte", full_test=72.0), static(6, 71.0, task="rte")]


# ---- curves ---------------------------------------------------------------------------------------

def test_dev_chosen_front_selects_on_dev_and_reports_test():
    # "lucky" is the best point on test at 2x but dominated on dev by "honest": it must not be used
    series = {"entropy": [pt(1.0, 85.0, 1.0, 84.0), pt(2.0, 80.0, 2.0, 70.0)], "patience": [pt(2.0, 75.0, 2.0, 90.0)]}
    chosen = dev_chosen_front(cell("joint", series=series).points)
    assert [(p["criterion"], p["test"]["quality"]) for p in chosen] == [("entropy", 84.0), ("entropy", 70.0)]
    assert quality_at(chosen, 2.0) == 70.0


def test_full_model_is_the_static_cell_with_k_equal_l_only():
    by_method = {"static-3": [static(3, 86.0)], "static-6": [static(6, 91.0), static(6, 93.0, seed=2)]}
    assert full_model_quality(by_method) == pytest.approx(92.0)
    assert full_model_quality({"static-3": [static(3, 86.0)]}) is None  # largest k = 3 < L = 6


# ---- aggregation and the report ------------------------------------------------------------------

def test_mean_and_std_over_two_seeds(tmp_path):
    result = compare_report(grid(), out_dir=tmp_path)
    joint = json.loads((tmp_path / "compare.json").read_text())["tasks"]["sst2"]["methods"]["joint"]
    # seeds: full test 90 and 94 -> mean 92, std (ddof=1) = sqrt(2 * 2**2 / 1) = 2.828...
    assert joint["full_test"]["mean"] == pytest.approx(92.0)
    assert joint["full_test"]["std"] == pytest.approx(math.sqrt(8.0))
    # AUC[1,3] per seed: (q - 2.5 + q - 10) / 2 -> 83.75 and 87.75
    assert joint["auc"]["values"] == [pytest.approx(83.75), pytest.approx(87.75)]
    assert joint["auc"]["mean"] == pytest.approx(85.75)
    assert joint["quality_at"]["1.5x"]["mean"] == pytest.approx(92.0 - 2.5)
    row = next(line for line in result["table"].splitlines() if line.startswith("| joint |"))
    assert "92.0 ± 2.8" in row and "85.8 ± 2.8" in row and "ok (2 seeds)" in row
    assert format_mean_std({"mean": 71.2, "std": 1.3, "n": 2, "of": 3}) == "71.2 ± 1.3 (2/3 seeds)"
    assert format_mean_std({"mean": 71.2, "std": None, "n": 1, "of": 1}) == "71.2"
    assert format_mean_std({"mean": None, "std": None, "n": 0, "of": 2}) == "not reached"


def test_failed_and_na_cells_are_reported_not_dropped(tmp_path):
    result = compare_report(grid(), out_dir=tmp_path)
    md = (tmp_path / "compare.md").read_text()
    assert md == result["table"]
    assert "| pabee | 1/2 ok; failed: CUDA out of memory \\| at step 3 (seed 2) |" in md
    assert "| leco | n/a: leco cannot do regression (seed 1) |" in md
    assert "## rte" in md and "## Overall" in md
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["tasks"]["sst2"]["methods"]["leco"]["status"] == {"ok": 0, "failed": 0, "n/a": 1, "pending": 0}
    # overall: AUC per task; only early-exit methods are ranked (joint 85.75 > pabee 81.75 on sst2, < on rte)
    assert "| joint | 85.8 ± 2.8 | 63.8 | 1.50 |" in md and "| static-6 | 0.0 | 0.0 | — |" in md
    assert "| leco | n/a |  | — |" in md
    # static rows come after the methods, by k
    rows = [line.split(" | ")[0][2:] for line in md.split("## rte")[0].split("Against the static")[0].splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["joint", "pabee", "leco", "static-2", "static-3", "static-6"]


def test_files_written_and_byte_identical_across_runs(tmp_path):
    a = compare_report(grid(), out_dir=tmp_path / "a")
    compare_report(grid(), out_dir=tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["compare.json", "compare.md", "pareto-rte.csv", "pareto-rte.png", "pareto-sst2.csv",
                     "pareto-sst2.png", "wallclock-rte.png", "wallclock-sst2.png"]
    assert set(a["plots"]) == {"sst2", "rte"} and a["plots"]["sst2"].endswith("pareto-sst2.png")
    assert (tmp_path / "a" / "pareto-sst2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_report_over_fewer_tasks_removes_the_files_of_the_others(tmp_path):
    """A report written where an earlier one held more tasks keeps no plot or CSV of a task it does not hold."""
    compare_report(grid(), out_dir=tmp_path)
    (tmp_path / "notes-rte.png").write_bytes(b"not the report's")  # not a per-task file of the report: kept
    compare_report([c for c in grid() if c.task == "sst2"], out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.json", "compare.md", "notes-rte.png", "pareto-sst2.csv",
                                                          "pareto-sst2.png", "wallclock-sst2.png"]


# ---- plots ----------------------------------------------------------------------------------------

def _styled_lines(fig) -> dict[str, tuple[str, str]]:
    """Label -> (colour, marker) of every labelled line and error-bar series."""
    drawn = {line.get_label(): (matplotlib.colors.to_hex(line.get_color()), line.get_marker())
             for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")}
    for ax in fig.axes:
        for bars in ax.containers:
            line = bars.lines[0]
            drawn.setdefault(bars.get_label(), (matplotlib.colors.to_hex(line.get_color()), line.get_marker()))
    return drawn


def test_twenty_methods_get_distinct_colour_marker_pairs():
    names = [f"method-{i}" for i in range(20)]
    styles = method_styles(names)
    assert len(set(styles.values())) == 20
    assert len({c for c, _ in list(styles.values())[:18]}) == 18  # colours alone distinct up to 18
    fig = pareto_figure("sst2", {n: [cell(n)] for n in names} | {"static-3": [static(3, 86.0)]}, styles)
    drawn = _styled_lines(fig)
    assert {n: drawn[n] for n in names} == styles
    assert drawn["static (first k layers)"][0] not in {c for c, _ in styles.values()}
    matplotlib.pyplot.close(fig)


def _legend_right_of_axes(fig) -> bool:
    fig.canvas.draw()  # Agg
    to_fig = fig.transFigure.inverted()
    legend = fig.legends[0].get_window_extent().transformed(to_fig)
    return all(legend.x0 >= ax.get_window_extent().transformed(to_fig).x1 for ax in fig.axes)


def test_pareto_figure_has_one_legend_outside_the_axes():
    by_method = {"joint": [cell("joint")], "pabee": [cell("pabee")], "static-6": [static(6, 91.0)]}
    fig = pareto_figure("sst2", by_method, method_styles(["joint", "pabee"]))
    assert isinstance(fig.canvas, matplotlib.backends.backend_agg.FigureCanvasAgg)
    assert len(fig.axes) == 2 and len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert _legend_right_of_axes(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["joint", "pabee", "static (first k layers)", "static ± seed std", "full model (static-L)"]
    matplotlib.pyplot.close(fig)


def test_pareto_figure_draws_dev_chosen_points_with_seed_error_bars_and_no_lines_through_them():
    # two seeds whose test numbers zigzag along the dev-chosen front: no line may join them
    zigzag = {"entropy": [pt(1.0, 90.0, 1.0, 90.0), pt(2.0, 85.0, 2.0, 70.0), pt(3.0, 80.0, 3.0, 78.0)]}
    by_method = {"joint": [cell("joint", 1, series=zigzag), cell("joint", 2, series=zigzag, full_test=94.0)],
                 "static-3": [static(3, 80.0), static(3, 84.0, seed=2)], "static-2": [static(2, 70.0), static(2, 70.0, seed=2)]}
    fig = pareto_figure("sst2", by_method, method_styles(["joint"]), (2.0, 3.0))
    layer = fig.axes[0]
    joint = [c for c in layer.containers if c.get_label() == "joint"]
    assert len(joint) == 1
    marks = joint[0].lines[0]
    assert marks.get_linestyle() == "None"  # markers only
    assert list(marks.get_ydata()) == pytest.approx([70.0, 78.0])  # the table's quality_at, at 2x and 3x
    # the static line: through the seed means at 6/k (2x: 82 ± 2.8, 3x: 70), its band around it
    static_line = next(ln for ln in layer.get_lines() if ln.get_label() == "static (first k layers)")
    assert list(static_line.get_xdata()) == [2.0, 3.0] and list(static_line.get_ydata()) == pytest.approx([82.0, 70.0])
    assert any(c.get_label() == "static ± seed std" for c in layer.collections)
    matplotlib.pyplot.close(fig)


def test_tradeoff_plot_draws_fronts_with_raw_points_and_legend_outside(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    zigzag = [{"quality": q, "flops_speedup": s} for s, q in [(1.0, 90.0), (1.5, 85.0), (2.0, 88.0), (3.0, 70.0)]]
    plots.tradeoff_plot({"b": zigzag, "a": zigzag[:2]}, 91.0, "t", tmp_path / "x.png")
    (fig,) = figures
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "b")
    assert list(line.get_xdata()) == [1.0, 2.0, 3.0]  # the dominated 1.5x point is off the line...
    raw = [c for c in fig.axes[0].collections if len(c.get_offsets()) == 4]
    assert len(raw) == 1  # ...but still drawn as a faint marker
    drawn = _styled_lines(fig)
    assert drawn["a"] != drawn["b"] and drawn["a"][1] != drawn["b"][1]
    assert _legend_right_of_axes(fig)
    matplotlib.pyplot.close(fig)


def test_timed_column_takes_the_criterion_fastest_on_dev_not_on_wall_clock():
    slow_on_dev = {**timed(1.5, 80.0, 3.0), "dev_layer_speedup": 1.5, "dev_quality": 85.0}  # best wall-clock (test rows)
    fast_on_dev = {**timed(2.5, 70.0, 1.2), "dev_layer_speedup": 2.5, "dev_quality": 75.0}
    summary = summarise_method([cell("joint", tmd={"entropy": slow_on_dev, "patience": fast_on_dev})], (2.0,))
    assert summary["timed"]["criterion"] == "patience"
    assert summary["timed"]["wallclock_speedup"]["mean"] == 1.2


def test_the_static_line_runs_through_every_static_k_point():
    # the static line through k=3 (2x, 80) and k=2 (3x, 70) reads 75 at 2.5x
    by_method = {"static-3": [static(3, 80.0)], "static-2": [static(2, 70.0)]}
    assert static_line_at(by_method, (2.5,))["2.5x"]["mean"] == pytest.approx(75.0)


def test_the_overall_table_says_failed_over_pending_and_pending_over_nothing():
    from tasks.reports.comparison import _overall

    def summary(failed, pending):
        return {"status": {"ok": 0, "failed": failed, "n/a": 0, "pending": pending}, "auc": None}

    text, _, _ = _overall({"a": {"x": summary(1, 2), "y": summary(0, 3)}}, "AUC")
    assert "| x | failed | — |" in text and "| y | pending | — |" in text
