"""The comparison's claims, each with its paired bootstrap interval (``tasks.reports.intervals``).

A claim compares two *sides* of one task at one target speed-up: a method's dev-chosen front
(``models.tradeoff.dev_chosen_front``, optionally one criterion's), the static line (every
static-k point of a seed on one dev-chosen front), or the best baseline (``BEST_BASELINE``: of
the BERxiT objectives, the one with the best mean DEV quality at the target; test never chooses).
Each side is read at the target as the report reads it (``quality_at``: linear in test layer
speed-up between two front points), and that reading is written over the per-row test
predictions of those points (``tasks.row_predictions``), so the bootstrap recomputes exactly the
reported number on every resample of rows and seeds. Seeds count when both sides have a reading
on them and score the same test rows; flagged cells (at chance, or far below the full model:
``flag_reasons``) never enter a claim.

The verdict is ``holds`` / ``fails`` only when the 95% interval excludes 0, else ``no difference
detected``; every claim names its seed count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from models.tradeoff import dev_chosen_front, interpolate_at, mean_std
from tasks.metric_schema import target_label
from tasks.reports.cells import ComparisonCell, is_static
from tasks.reports.intervals import Reading, format_interval, interpolation_weights, paired_difference
from tasks.reports.tables import markdown_table
from tasks.row_predictions import LAYER, row_key

STATIC, BEST_BASELINE = "static", "best baseline"
BASELINES = ("joint", "weighted", "two_stage", "alternating")  # the BERxiT objectives ConsistentEE starts from
# (label, side A, side B): "A beats B"; a side is a method, "method/criterion", STATIC or BEST_BASELINE
NAMED_CLAIMS = (
    ("BERxiT ALT vs JT", "alternating", "joint"),
    ("Past-Future vs local exits (joint)", "past-future", "joint"),
    ("Past-Future vs local exits (weighted, its own objective)", "past-future", "weighted"),
    ("LECO vs JT-linear (joint)", "leco", "joint"),
    ("COBEE vs entropy (LECO's model)", "leco/cobee", "leco/entropy"),
    ("ConsistentEE vs the best baseline", "consistentee", BEST_BASELINE),
    ("HashEE vs static", "hashee", STATIC),
)
# (label, A, B): the mean over every exit of the layer-wise test quality (LECO's AVG), A - B
LAYERWISE_CLAIMS = (("LECO AVG vs JT-linear (joint): mean over exits 1..L", "leco", "joint"),)
FLAG_GAP = 10.0  # points of full-depth dev quality below the full model (static-L) that flag a cell

Rows = Callable[[str], tuple[np.ndarray, dict[str, np.ndarray]]]  # test_rows path -> (labels, predictions)


# ---- flags -------------------------------------------------------------------------------------

def flag_reasons(by_method: dict[str, list[ComparisonCell]], gap: float = FLAG_GAP) -> dict[tuple[str, int], str]:
    """``{(method, seed): why}`` for one task's ok cells not fit to rank: the full-depth model at
    chance on dev, or (early-exit methods with a full-depth model only) its dev quality more than
    ``gap`` points below the same seed's full model (the deepest static-k cell; without one, the best
    full-depth dev quality of the seed). A one-point model (HashEE: every sweep point without a
    threshold) has no full-depth model: its quality is its operating point's, which may be well
    below the full model by design, so only the chance check applies to it."""
    reference: dict[int, float] = {}
    static = sorted((m for m in by_method if is_static(m)), key=lambda m: int(m.split("-")[1]))
    for seed in {c.seed for cells in by_method.values() for c in cells if c.ok}:
        deepest = [c for c in by_method.get(static[-1], []) if c.ok and c.seed == seed] if static else []
        pool = deepest or [c for cells in by_method.values() for c in cells if c.ok and c.seed == seed]
        reference[seed] = max(c.summary.full_dev for c in pool)
    flags = {}
    for method, cells in by_method.items():
        for c in cells:
            if not c.ok:
                continue
            if c.summary.at_chance:
                flags[(method, c.seed)] = "at chance on dev"
            elif (not is_static(method) and not _one_point(c)  # static-k and one-point models: small by design
                  and c.summary.full_dev < reference[c.seed] - gap):
                flags[(method, c.seed)] = (f"full-depth dev {c.summary.full_dev:.1f}, more than {gap:g} below the full "
                                           f"model's {reference[c.seed]:.1f}")
    return flags


def _one_point(c: ComparisonCell) -> bool:
    """A model with one operating point and no threshold (HashEE): ``full_dev`` is that point's quality."""
    return all(p["test"].get("threshold") is None for p in c.points)


# ---- sides -------------------------------------------------------------------------------------

def _with_rows(c: ComparisonCell, criterion: str | None = None) -> list[dict]:
    """The cell's sweep points (one criterion's when given), each knowing where its test rows are."""
    return [{**p, "rows": (c.summary.test_rows, row_key(p["criterion"], p["index"]))}
            for p in c.points if criterion is None or p["criterion"] == criterion]


def method_fronts(cells: list[ComparisonCell], criterion: str | None = None) -> dict[int, list[dict]]:
    """``{seed: dev-chosen front}`` of a method's usable cells."""
    return {c.seed: dev_chosen_front(_with_rows(c, criterion)) for c in cells}


def static_fronts(by_method: dict[str, list[ComparisonCell]]) -> dict[int, list[dict]]:
    """``{seed: the static line}``: every static-k point of the seed on one dev-chosen front."""
    points: dict[int, list[dict]] = {}
    for method, cells in by_method.items():
        if is_static(method):
            for c in cells:
                points.setdefault(c.seed, []).extend(_with_rows(c))
    return {seed: dev_chosen_front(p) for seed, p in sorted(points.items())}


def dev_quality_at(front: list[dict], target: float) -> float | None:
    """DEV quality at dev layer speed-up ``target`` along ``front`` (as ``quality_at`` reads test)."""
    pts = [(p["dev"]["layer_speedup"], p["dev"]["quality"]) for p in front]
    return interpolate_at(pts, max(target, min(x for x, _ in pts))) if pts else None


def side_fronts(side: str, by_method: dict[str, list[ComparisonCell]], target: float) -> tuple[str, dict[int, list[dict]]] | None:
    """``(name, {seed: front})`` of a claim's side on one task (usable cells only); None when absent."""
    if side == STATIC:
        fronts = static_fronts(by_method)
        return (STATIC, fronts) if fronts else None
    if side == BEST_BASELINE:
        ranked = []
        for method in BASELINES:
            fronts = method_fronts(by_method.get(method, []))
            dev = mean_std([dev_quality_at(f, target) for f in fronts.values()])["mean"]
            if dev is not None:
                ranked.append((dev, method, fronts))
        if not ranked:
            return None
        _, method, fronts = max(ranked, key=lambda r: r[0])
        return f"{method} (best baseline on dev)", fronts
    method, _, criterion = side.partition("/")
    if not by_method.get(method):
        return None
    fronts = method_fronts(by_method[method], criterion or None)
    return (side, fronts) if any(fronts.values()) else None


# ---- readings and claims -----------------------------------------------------------------------

def reading(front: list[dict], target: float, rows: Rows) -> tuple[np.ndarray, Reading] | None:
    """``(test labels, Reading)`` of ``front`` at ``target``; None when not reached or rows are missing."""
    weights = interpolation_weights([p["test"]["layer_speedup"] for p in front], target)
    if weights is None or any(front[i]["rows"][0] is None for i, _ in weights):
        return None
    labels, predictions = None, []
    for i, _ in weights:
        path, key = front[i]["rows"]
        labels, by_key = rows(path)
        if key not in by_key and len(by_key) == 1:  # a single-point model keeps one vector
            key = next(iter(by_key))
        predictions.append(by_key[key])
    return labels, Reading(tuple(w for _, w in weights), tuple(predictions))


def layerwise_reading(c: ComparisonCell, rows: Rows) -> tuple[np.ndarray, Reading] | None:
    """``(test labels, Reading)`` of the mean layer-wise test quality over exits 1..L (weights 1/L);
    None without every exit's rows."""
    if c.summary.test_rows is None:
        return None
    labels, by_key = rows(c.summary.test_rows)
    L = c.summary.num_layers
    keys = [f"{LAYER}:{k}" for k in range(1, L + 1)]
    if any(k not in by_key for k in keys):
        return None
    return labels, Reading(tuple([1.0 / L] * L), tuple(by_key[k] for k in keys))


def paired_readings(metric: str, readings_a: dict[int, tuple | None], readings_b: dict[int, tuple | None],
                    resamples: int) -> dict:
    """The interval of A - B over the seeds where both sides have a reading on the same test rows."""
    gold, side_a, side_b = [], [], []
    for seed in sorted(set(readings_a) & set(readings_b)):
        a, b = readings_a[seed], readings_b[seed]
        if a is None or b is None or len(a[0]) != len(b[0]) or not np.array_equal(a[0], b[0]):
            continue
        gold.append(a[0])
        side_a.append(a[1])
        side_b.append(b[1])
    if gold and len({len(g) for g in gold}) > 1:  # seeds scored different numbers of rows: keep the first's
        keep = [i for i, g in enumerate(gold) if len(g) == len(gold[0])]
        gold, side_a, side_b = [gold[i] for i in keep], [side_a[i] for i in keep], [side_b[i] for i in keep]
    if not gold:
        return {"verdict": "not reached on both sides (or no per-row predictions)", "seeds": 0}
    return paired_difference(metric, gold, side_a, side_b, resamples=resamples)


def paired_claim(metric: str, fronts_a: dict[int, list[dict]], fronts_b: dict[int, list[dict]], target: float,
                 rows: Rows, resamples: int) -> dict:
    """The interval of A - B at ``target`` over the seeds both sides read on the same test rows;
    ``{"verdict": ...}`` alone when no seed qualifies."""
    seeds = set(fronts_a) & set(fronts_b)
    return paired_readings(metric, {s: reading(fronts_a[s], target, rows) for s in seeds},
                           {s: reading(fronts_b[s], target, rows) for s in seeds}, resamples)


def claims_for_task(by_method: dict[str, list[ComparisonCell]], speedups: tuple[float, ...], rows: Rows,
                    flags: dict[tuple[str, int], str], resamples: int = 2000) -> dict:
    """Every early-exit method against the static line, then ``NAMED_CLAIMS`` whose sides exist, at
    each target, and ``LAYERWISE_CLAIMS`` over every exit: ``{"against_static": {method: {"2x": claim}},
    "named": {label: {"2x": claim}}, "layerwise": {label: claim}}`` (a claim names its sides ``a``, ``b``)."""
    usable = {m: [c for c in cells if c.ok and (m, c.seed) not in flags] for m, cells in by_method.items()}
    metric = next((c.metric for cells in usable.values() for c in cells), None)
    out = {"against_static": {}, "named": {}, "layerwise": {}}
    if metric is None:
        return out
    pairs = [(m, m, STATIC, "against_static") for m in usable if not is_static(m) and usable[m]]
    pairs += [(label, a, b, "named") for label, a, b in NAMED_CLAIMS]
    for label, a, b, group in pairs:
        by_target = {}
        for t in speedups:
            side_a, side_b = side_fronts(a, usable, t), side_fronts(b, usable, t)
            if side_a is None or side_b is None:
                break
            by_target[target_label(t)] = {"a": side_a[0], "b": side_b[0],
                                    **paired_claim(metric, side_a[1], side_b[1], t, rows, resamples)}
        if by_target:
            out[group][label] = by_target
    for label, a, b in LAYERWISE_CLAIMS:
        if usable.get(a) and usable.get(b):
            claim = paired_readings(metric, {c.seed: layerwise_reading(c, rows) for c in usable[a]},
                                    {c.seed: layerwise_reading(c, rows) for c in usable[b]}, resamples)
            out["layerwise"][label] = {"a": a, "b": b, **claim}
    return out


def claims_markdown(claims: dict, speedups: tuple[float, ...]) -> str:
    """The two claim tables of one task (difference [95% interval] verdict (seeds))."""
    def text(c: dict) -> str:
        cell = format_interval(c) if "difference" in c else c["verdict"]
        return cell if c["a"] != c["b"] and not c["b"].endswith("(best baseline on dev)") else f"{cell} vs {c['b']}"

    head = [f"@ {target_label(t)}" for t in speedups]
    parts = []
    if claims["against_static"]:
        rows = [[m] + [text(by[target_label(t)]) if target_label(t) in by else "—" for t in speedups]
                for m, by in claims["against_static"].items()]
        parts.append("Against the static line (test quality minus the static line's at the same layer speed-up; "
                     "mean over seeds, [95% paired bootstrap interval], verdict, seed count):\n\n"
                     + markdown_table(["method"] + head, rows))
    if claims["named"]:
        rows = [[label] + [text(by[target_label(t)]) if target_label(t) in by else "—" for t in speedups]
                for label, by in claims["named"].items()]
        parts.append("Method claims (A minus B, same reading):\n\n" + markdown_table(["claim (A vs B)"] + head, rows))
    if claims.get("layerwise"):
        rows = [[label, format_interval(c) if "difference" in c else c["verdict"]] for label, c in claims["layerwise"].items()]
        parts.append("Layer-wise claims (every row forced to exit at each layer, the test quality averaged over "
                     "exits, A minus B):\n\n" + markdown_table(["claim (A vs B)", "difference"], rows))
    return "\n\n".join(parts)


def rows_loader(root: Path | None) -> Rows:
    """A cached reader of ``test_rows.npz`` files, relative paths against ``root``."""
    from tasks.row_predictions import read_test_rows

    cache: dict[str, tuple] = {}

    def load(path: str):
        if path not in cache:
            p = Path(path)
            cache[path] = read_test_rows(p if p.is_absolute() or root is None else Path(root) / p)
        return cache[path]

    return load
