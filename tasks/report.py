"""Task: the comparison report across strategies: one table (Markdown + JSON) and one plot."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from tasks.io import atomic_write_json, atomic_write_text
from tasks.plots import layerwise_plot, tradeoff_plot


def results_table(summaries: dict[str, dict], timing_bs: list[int]) -> list[dict]:
    """One row per (strategy, criterion) at its dev-selected operating point, plus full models."""
    rows = []
    for strategy, s in summaries.items():
        rows.append({"strategy": strategy, "criterion": "full model", "threshold": None,
                     "test_quality": s["full"]["test_quality"], "avg_exit_layer": s["num_layers"],
                     "layer_speedup": 1.0, "flops_speedup": 1.0, **{f"wallclock_bs{b}": 1.0 for b in timing_bs}})
        for name, op in s["operating_points"].items():
            rows.append({"strategy": strategy, "criterion": name, "threshold": op["threshold"],
                         "test_quality": op["test"]["quality"], "avg_exit_layer": op["test"]["avg_exit_layer"],
                         "layer_speedup": op["test"]["layer_speedup"], "flops_speedup": op["test"]["flops_speedup"],
                         **{f"wallclock_bs{b}": op.get(f"wallclock_speedup_bs{b}") for b in timing_bs}})
    return rows


def markdown_table(rows: list[dict], timing_bs: list[int]) -> str:
    head = ["strategy", "criterion", "threshold", "test quality", "avg exit layer", "layer speed-up", "FLOPs speed-up"]
    head += [f"wall-clock speed-up bs={b}" for b in timing_bs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        cells = [r["strategy"], r["criterion"], fmt(r["threshold"], 3), fmt(r["test_quality"]), fmt(r["avg_exit_layer"]),
                 fmt(r["layer_speedup"]), fmt(r["flops_speedup"])] + [fmt(r[f"wallclock_bs{b}"]) for b in timing_bs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@task(name="build_report")
def build_report(eval_dirs: dict[str, Path], timing_bs: list[int], out_dir: Path) -> dict:
    """Collect every strategy's ``metrics.json``/``curves.json`` into one table and plots."""
    summaries, curves = {}, {}
    for strategy, d in eval_dirs.items():
        summaries[strategy] = json.loads((Path(d) / "metrics.json").read_text())
        for name, points in json.loads((Path(d) / "curves.json").read_text()).items():
            curves[f"{strategy}/{name}"] = [p["test"] for p in points]
    rows = results_table(summaries, timing_bs)
    table = markdown_table(rows, timing_bs)
    task_name = next(iter(summaries.values()))["task"]
    best_full = max(s["full"]["test_quality"] for s in summaries.values())
    tradeoff_plot(curves, best_full, f"{task_name}: test quality vs FLOPs speed-up", out_dir / "tradeoff.png")
    layerwise_plot({s: v["layerwise"]["test"] for s, v in summaries.items()}, f"{task_name}: layer-wise test scores",
                   out_dir / "layerwise.png")
    atomic_write_text(out_dir / "results.md", table)
    atomic_write_json(out_dir / "results.json", {"task": task_name, "rows": rows})
    return {"table": table, "rows": rows, "plot": str(out_dir / "tradeoff.png"),
            "layerwise_plot": str(out_dir / "layerwise.png"), "dir": str(out_dir)}
