"""Threshold sweeps and operating points: pure functions over recorded passes.

A *curve point* is one criterion setting's quality and efficiency on one recorded split
(``models.training.Recording``); a *sweep* scores every threshold of a criterion's grid on dev
and test from the same recordings; an *operating point* is the sweep point chosen on dev (the
fastest whose dev quality stays above a floor). Test never chooses anything.

Shared by the evaluation task, the ConsistentEE comparison report and the benchmarks.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from models.criteria import CRITERIA, ExitCriterion, make_criterion, simulate
from models.flops import flops_per_instance, full_model_flops
from models.metrics import predictions, task_score
from models.training import Recording


def usable_criteria(names: list[str], model) -> list[str]:
    """The named criteria this model supports (learned criteria need their exit scorer)."""
    out = []
    for name in names:
        cls = CRITERIA[name]
        if cls.classification_only and model.config.regression:
            continue
        if cls.needs_certainty and cls.module != model.config.scorer:
            continue
        out.append(name)
    return out


def curve_point(model, criterion: ExitCriterion, rec: Recording, metric: str, regression: bool) -> dict:
    """Quality and efficiency of one criterion setting on one recorded split."""
    exit_layer, exit_logits = simulate(criterion, rec.logits, rec.scores)
    L = rec.logits.shape[0]
    avg = exit_layer.double().mean().item()
    flops = flops_per_instance(model, rec.lengths, exit_layer, criterion).sum().item()
    full = full_model_flops(model, rec.lengths).sum().item()
    return {"threshold": criterion.threshold, "quality": task_score(metric, exit_logits, rec.labels, regression),
            "avg_exit_layer": avg, "saved_layers": 1 - avg / L, "layer_speedup": L / avg, "flops_speedup": full / flops}


def sweep(model, name: str, recordings: dict[str, Recording], metric: str, regression: bool, points: int,
          options: dict | None = None, grid_split: str = "dev") -> list[dict]:
    """Every threshold of criterion ``name``'s grid (quantiles of its score on ``grid_split``),
    scored on every recorded split: ``[{split: curve point, ...}, ...]``."""
    grid = CRITERIA[name].sweep(recordings[grid_split].logits, recordings[grid_split].scores, points)
    out = []
    for tau in grid:
        crit = make_criterion(name, tau, **(options or {}))
        out.append({split: curve_point(model, crit, rec, metric, regression) for split, rec in recordings.items()})
    return out


def best_dev_quality(point: dict) -> float:
    return point["dev"]["quality"]


def operating_points(model, names: list[str], recordings: dict[str, Recording], metric: str, regression: bool,
                     points: int, options: Callable[[str], dict], floor: float) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Every criterion's sweep and its operating point: the fastest setting whose dev quality is at
    least ``floor`` (when none is, the best on dev).

    Args:
        recordings: ``{"dev": ..., "test": ...}``; the grid comes from dev.
        points: thresholds per sweep; ``options(name)``: the criterion's settings besides its threshold.

    Returns:
        ``(curves, operating)``: ``{name: sweep}`` and ``{name: {"threshold", "dev", "test"}}``.
    """
    curves, operating = {}, {}
    for name in names:
        swept = curves[name] = sweep(model, name, recordings, metric, regression, points, options(name))
        chosen = fastest_within(swept, floor) or max(swept, key=best_dev_quality)  # nothing within the floor: the best on dev
        operating[name] = {"threshold": chosen["dev"]["threshold"], "dev": chosen["dev"], "test": chosen["test"]}
    return curves, operating


def fixed_points(model, criteria: dict[str, ExitCriterion], recordings: dict[str, Recording], metric: str,
                 regression: bool) -> dict[str, dict]:
    """Each given criterion setting (e.g. a method's default threshold) on every recorded split:
    ``{name: {"threshold": tau, split: curve point, ...}}``."""
    return {name: {"threshold": crit.threshold,
                   **{split: curve_point(model, crit, rec, metric, regression) for split, rec in recordings.items()}}
            for name, crit in criteria.items()}


def real_vs_simulated(model, criterion: ExitCriterion, batches: Iterable[dict[str, torch.Tensor]], rec: Recording,
                      regression: bool) -> tuple[int, torch.Tensor]:
    """Real early exit (``model.early_exit``) over ``batches`` against the simulation on ``rec``, the
    recording of the same rows in the same order.

    Returns:
        ``(mismatches, exit_layer)``: rows whose real exit layer or prediction differs from the
        simulated one, and the simulated exit layers ``[n]`` (1-based).
    """
    real_layers, real_logits = [], []
    for b in batches:
        out = model.early_exit(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), criterion)
        real_layers.append(out.exit_layer)
        real_logits.append(out.logits)
    sim_layer, sim_logits = simulate(criterion, rec.logits, rec.scores)
    same_layer = torch.cat(real_layers) == sim_layer
    same_pred = torch.as_tensor(predictions(torch.cat(real_logits), regression) == predictions(sim_logits, regression))
    return int((~(same_layer & same_pred)).sum()), sim_layer


def fastest_within(points: list[dict], floor: float, view: Callable[[dict], dict] = lambda p: p["dev"]) -> dict | None:
    """The point with the largest ``view(p)`` layer speed-up (ties: higher quality) whose
    ``view(p)`` quality is at least ``floor``; None when none is."""
    ok = [p for p in points if view(p)["quality"] >= floor]
    return max(ok, key=lambda p: (view(p)["layer_speedup"], view(p)["quality"])) if ok else None


def nearest_speedup(points: list[dict], target: float, view: Callable[[dict], dict] = lambda p: p["dev"]) -> dict | None:
    """The point whose ``view(p)`` layer speed-up is closest to ``target`` (ties: higher quality);
    None without points. Tables "at about 2x / 3x" (Global Past-Future Tables 1-2) read it on dev."""
    if not points:
        return None
    return min(points, key=lambda p: (abs(view(p)["layer_speedup"] - target), -view(p)["quality"]))


def _getter(key) -> Callable:
    return key if callable(key) else (lambda p: p[key])


def pareto_front(points: list, x, y) -> list:
    """The points no other point beats on both x and y (both maximised; of exact ties the first is
    kept), sorted by x ascending. ``x``/``y``: a key (dict key or tuple index) or a function of a point."""
    fx, fy = _getter(x), _getter(y)
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (-fx(p), -fy(p))):
        if fy(p) > best:
            front.append(p)
            best = fy(p)
    return front[::-1]
