"""Quality-vs-speed-up maths shared by every report: pure functions over sweep points.

A *sweep point* is one threshold of a criterion scored on dev and test, ``{"dev": side,
"test": side}`` with ``side = {"threshold", "quality", "layer_speedup", "flops_speedup", ...}``
(``models.operating``; ``curves.json`` holds lists of them). Quality is in percent (higher is
better), speed-ups are ratios to the full-depth model (x). Dev chooses, test is reported.

- ``pareto_front`` (from ``models.operating``) and ``dev_chosen_front``: the fronts;
- ``interpolate_at`` and ``quality_at``: a front read at a target speed-up;
- ``curve_auc``: the area under that reading;
- ``mean_std``: aggregation over seeds; ``claim``: a difference against a reference line,
  judged by the seed spread; ``average_ranks``: ranks over tasks;
- ``speedup_rows`` and ``best_on_target``: curves read at the dev point nearest each target.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from models.operating import nearest_speedup, pareto_front

__all__ = ["SPEEDUP_TOLERANCE", "average_ranks", "best_on_target", "claim", "curve_auc", "dev_chosen_front",
           "interpolate_at", "mean_std", "pareto_front", "quality_at", "speedup_rows"]

SPEEDUP_TOLERANCE = 0.04  # relative: "about 2x" = within 4% on dev (Past-Future Tables 3, 5)


# ---- fronts and reading them -------------------------------------------------------------------

def target_label(target: float) -> str:
    """A target speed-up as reports and metric keys name it: 2.0 -> ``"2x"``, 1.5 -> ``"1.5x"``."""
    return f"{target:g}x"


def interpolate_at(points: list[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of ``(x, y)`` points (any order) at ``x``; None outside their x range."""
    pts = sorted(points)
    if not pts or x < pts[0][0] or x > pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1]  # a single point exactly at x


def dev_chosen_front(points: list[dict], x: str = "layer_speedup") -> list[dict]:
    """The sweep points on the DEV Pareto front of (dev ``x``, dev quality), sorted by dev ``x``;
    report their ``"test"`` numbers."""
    return pareto_front(points, lambda p: p["dev"][x], lambda p: p["dev"]["quality"])


def quality_at(front: list[dict], target: float, x: str = "layer_speedup") -> float | None:
    """Test quality at test ``x`` = ``target``, linear between the front's points; below its slowest
    point that point's quality; None beyond its reach (or for an empty front)."""
    pts = [(p["test"][x], p["test"]["quality"]) for p in front]
    if not pts:
        return None
    return interpolate_at(pts, max(target, min(px for px, _ in pts)))


def curve_auc(front: list[dict], lo: float = 1.0, hi: float = 3.0, x: str = "layer_speedup") -> tuple[float, float | None]:
    """``(area / (hi - lo), reach)``: the exact area under ``quality_at`` (test quality vs test ``x``)
    over [lo, hi], where quality counts as 0 beyond the reach = the front's largest test ``x``
    (None for an empty front, whose AUC is 0). Same units as quality (percent)."""
    if not front:
        return 0.0, None
    xs_front = [p["test"][x] for p in front]
    reach = max(xs_front)
    top = min(hi, reach)
    if top <= lo:
        return 0.0, reach
    xs = sorted({lo, top, *(v for v in xs_front if lo < v < top)})  # the curve is linear between these
    ys = [quality_at(front, v, x) for v in xs]
    return float(np.trapezoid(ys, xs)) / (hi - lo), reach


# ---- over seeds and tasks ----------------------------------------------------------------------

def mean_std(values: list[float | None]) -> dict:
    """``{"mean", "std", "n", "of", "values"}`` over the non-None values: std with ddof=1, None below
    2 values; ``n`` = values counted, ``of`` = all values (one per ok seed)."""
    kept = [float(v) for v in values if v is not None]
    return {"mean": float(np.mean(kept)) if kept else None,
            "std": float(np.std(kept, ddof=1)) if len(kept) >= 2 else None,
            "n": len(kept), "of": len(values), "values": list(values)}


def claim(method: dict, reference: dict) -> dict:
    """A method's ``mean_std`` against a reference line's at one target: the mean difference and
    whether it exceeds the seed spread sqrt(std_method^2 + std_reference^2); with fewer than 2
    seeds there is no spread and no claim."""
    if method["mean"] is None or reference["mean"] is None:
        return {"difference": None, "verdict": "not reached"}
    diff = method["mean"] - reference["mean"]
    if method["std"] is None or reference["std"] is None:
        return {"difference": diff, "verdict": "one seed: no claim"}
    spread = math.hypot(method["std"], reference["std"])
    verdict = "above static" if diff > spread else "below static" if diff < -spread else "within the seed spread"
    return {"difference": diff, "spread": spread, "verdict": verdict}


def average_ranks(auc: dict[str, dict[str, dict]], tasks: list[str]) -> dict[str, dict]:
    """``auc[method][task]`` = aggregate -> ``{method: {"mean": average rank or None, "tasks": n}}``;
    per task, rows with a mean AUC are ranked (1 = best, ties share the average rank)."""
    ranks: dict[str, list[float]] = {m: [] for m in auc}
    for task in tasks:
        scores = {m: a[task]["mean"] for m, a in auc.items() if task in a and a[task]["mean"] is not None}
        for m, s in scores.items():
            ranks[m].append(1 + sum(v > s for v in scores.values()) + (sum(v == s for v in scores.values()) - 1) / 2)
    return {m: {"mean": float(np.mean(r)) if r else None, "tasks": len(r)} for m, r in ranks.items()}


# ---- rows read at target speed-ups (Past-Future, LECO) ----------------------------------------------

def speedup_rows(curves: dict[str, dict[str, list[dict]]], speedups: list[float],
                 kind: Callable[[str, str], str]) -> list[dict]:
    """``curves[setting][criterion]`` = sweep points -> rows ``{"method", "setting", "criterion",
    "kind": kind(setting, criterion), "at": {"2x": ...}}``: at each target, the point whose DEV
    layer speed-up is nearest, with its test numbers; ``on_target`` when that dev speed-up is
    within ``SPEEDUP_TOLERANCE`` of the target (only such rows take part in a claim)."""
    rows = []
    for setting, by_criterion in curves.items():
        for criterion, points in by_criterion.items():
            at = {}
            for target in speedups:
                p = nearest_speedup(points, target)
                at[target_label(target)] = {"threshold": p["dev"]["threshold"], "dev_quality": p["dev"]["quality"],
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
