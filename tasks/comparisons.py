"""Shared pieces of the method comparisons (Global Past-Future, LECO): rows read at target
layer speed-ups, and the curves every row came from as a CSV and a plot.

A row is one trained model (``setting``) with one criterion. For each target speed-up the
row's threshold is the sweep point whose *dev* layer speed-up is closest to the target; its
test numbers are reported. A row whose dev speed-up misses the target by more than 4% (the
Past-Future paper's tolerance; e.g. patience cannot pass L/2 = 3x with L = 6) is off target
and takes no part in a claim check.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from models.operating import nearest_speedup
from tasks.io import atomic_write_text
from tasks.plots import tradeoff_plot

SPEEDUP_TOLERANCE = 0.04  # relative: "about 2x" = within 4% on dev (Past-Future Tables 3, 5)


def speedup_rows(curves: dict[str, dict[str, list[dict]]], speedups: list[float],
                 kind: Callable[[str, str], str]) -> list[dict]:
    """``curves[setting][criterion]`` = sweep points (``{"dev": point, "test": point}``) ->
    rows ``{"method", "setting", "criterion", "kind": kind(setting, criterion), "at": {"2x": ...}}``."""
    rows = []
    for setting, by_criterion in curves.items():
        for criterion, points in by_criterion.items():
            at = {}
            for target in speedups:
                p = nearest_speedup(points, target)
                at[f"{target:g}x"] = {"threshold": p["dev"]["threshold"], "dev_quality": p["dev"]["quality"],
                                      "on_target": abs(p["dev"]["layer_speedup"] / target - 1) <= SPEEDUP_TOLERANCE,
                                      "dev_layer_speedup": p["dev"]["layer_speedup"], "test_quality": p["test"]["quality"],
                                      "test_layer_speedup": p["test"]["layer_speedup"],
                                      "test_flops_speedup": p["test"]["flops_speedup"]}
            rows.append({"method": f"{setting} ({criterion})", "setting": setting, "criterion": criterion,
                         "kind": kind(setting, criterion), "at": at})
    return rows


def best_on_target(rows: list[dict], target: str, keep: Callable[[dict], bool]) -> dict | None:
    """Among rows ``keep`` accepts and on target at ``target``, the one with the best dev quality."""
    candidates = [r for r in rows if keep(r) and r["at"][target]["on_target"]]
    return max(candidates, key=lambda r: r["at"][target]["dev_quality"]) if candidates else None


def speedup_markdown(rows: list[dict], speedups: list[float]) -> str:
    """One line per row: test quality (layer / FLOPs speed-up) at each target, off-target marked."""
    targets = [f"{t:g}x" for t in speedups]
    head = ["method", "kind"] + [f"{t}: test quality (layer / FLOPs speed-up)" for t in targets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["kind"]]
        for t in targets:
            a = r["at"][t]
            mark = "" if a["on_target"] else " (off target)"
            cells.append(f"{a['test_quality']:.2f} ({a['test_layer_speedup']:.2f}x / {a['test_flops_speedup']:.2f}x){mark}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nThresholds are chosen on dev at the layer speed-up nearest each target; 'off target' "
                               f"marks a dev speed-up more than {SPEEDUP_TOLERANCE:.0%} away from it.\n")


def write_curves(curves: dict[str, dict[str, list[dict]]], reference: float, title: str, out_dir: Path) -> Path:
    """``curves.csv`` (DVC plots) and ``curves.png`` (test quality vs layer speed-up, every row);
    returns the plot's path."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "threshold", "quality", "layer_speedup", "flops_speedup"])
    plotted = {}
    for setting, by_criterion in curves.items():
        for criterion, points in by_criterion.items():
            name = f"{setting} ({criterion})"
            plotted[name] = [p["test"] for p in points]
            for p in points:
                t = p["test"]
                w.writerow([name, t["threshold"], round(t["quality"], 4), round(t["layer_speedup"], 4), round(t["flops_speedup"], 4)])
    atomic_write_text(Path(out_dir) / "curves.csv", buf.getvalue())
    return tradeoff_plot(plotted, reference, title, Path(out_dir) / "curves.png", x="layer_speedup")


def interpolate_at(points: list[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of ``(x, y)`` points (any order) at ``x``; None outside their x range."""
    pts = sorted(points)
    if not pts or x < pts[0][0] or x > pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1]  # a single point exactly at x
