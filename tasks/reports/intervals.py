"""Paired bootstrap intervals of a quality difference between two sides (pure: numpy and scipy).

A *side* is what one claim compares at one target speed-up: per seed, a ``Reading``, the test
quality written as a weighted sum of the metric of a few per-row prediction vectors
(``quality = sum_j w_j * metric(pred_j, gold)``). Reading a dev-chosen front at a target speed-up
interpolates linearly between two of its points (``models.tradeoff.quality_at``), so the weights
are those of the interpolation (one point with weight 1 when the target falls on it or below the
front's slowest point). The weights stay fixed under resampling: the interval is conditional on
the operating points dev chose (their speed-ups are not resampled).

The difference ``A - B`` is averaged over seeds. Its 95% interval comes from
``scipy.stats.bootstrap`` (percentile method) over two samples resampled independently: the test
rows (positions 0..n-1) and, when there are two seeds or more, the seeds. One row resample serves
both sides and every seed, and one seed resample both sides: the pairing is by construction, so
the interval sees neither the rows' nor the seeds' common variation twice. The metric is
recomputed on every resample (accuracy, accuracy/F1, Pearson/Spearman: ``metric_on_rows``),
vectorised over the resamples.

Shapes: n = test rows, S = seeds, r = resamples in one batch. Quality in percent.

A claim "A beats B" *holds* when the interval lies above 0, *fails* when it lies below 0, and
otherwise no difference is detected (``verdict``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap, rankdata

CONFIDENCE = 0.95
RESAMPLES = 2000
HOLDS, FAILS, NO_DIFFERENCE = "holds", "fails", "no difference detected"


@dataclass(frozen=True)
class Reading:
    """One side of a claim at one seed: quality = sum_j ``weights[j]`` * metric(``predictions[j]``, gold).

    Attributes:
        weights: interpolation weights, summing to 1.
        predictions: one ``[n]`` vector per weight: class ids, or scalars for regression.
    """

    weights: tuple[float, ...]
    predictions: tuple[np.ndarray, ...]


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r along the last axis of ``[..., n]`` arrays; 0 where either side is constant."""
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean(-1, keepdims=True)
    denominator = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(-1) / denominator
    return np.where(denominator > 0, r, 0.0)


def metric_on_rows(metric: str, pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """``metric`` (``models.metrics.METRICS``, percent) of ``pred [..., n]`` against ``gold [..., n]``,
    one score per leading index. Matches ``models.metrics.task_score`` on one vector (a constant
    prediction's correlation counts as 0)."""
    if metric == "accuracy":
        return 100.0 * (pred == gold).mean(-1)
    if metric == "acc_f1":
        accuracy = (pred == gold).mean(-1)
        tp = ((pred == 1) & (gold == 1)).sum(-1)
        predicted, actual = (pred == 1).sum(-1), (gold == 1).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(predicted + actual > 0, 2.0 * tp / (predicted + actual), 0.0)
        return 50.0 * (accuracy + f1)
    if metric == "pearson_spearman":
        pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
        spearman = _pearson(rankdata(pred, axis=-1), rankdata(gold, axis=-1))
        return 50.0 * (_pearson(pred, gold) + spearman)
    raise ValueError(f"unknown metric {metric!r}")


def resampled_ranks(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share) of ``values[rows]`` within each resample ``rows [..., n]``,
    as ``scipy.stats.rankdata(values[rows], axis=-1)`` gives them, in O(n) per resample: a row's
    rank is the count of resampled rows below its value plus half its ties (counted by bincount)."""
    _, dense = np.unique(values, return_inverse=True)  # [n] ids 0..R-1 in value order, ties share one
    R = int(dense.max()) + 1
    picked = dense[rows].reshape(-1, rows.shape[-1])  # [b, n]
    flat = (np.arange(len(picked))[:, None] * R + picked).ravel()
    counts = np.bincount(flat, minlength=len(picked) * R).reshape(len(picked), R)  # [b, R]
    below = np.cumsum(counts, axis=-1) - counts
    b = np.arange(len(picked))[:, None]
    return (below[b, picked] + (counts[b, picked] + 1) / 2.0).reshape(rows.shape)


def reading_quality(metric: str, reading: Reading, gold: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The reading's quality on ``rows`` (``[..., n]`` indices; None: every row once)."""
    if rows is None:
        return sum(w * metric_on_rows(metric, np.asarray(p), np.asarray(gold)) for w, p in zip(reading.weights, reading.predictions))
    gold = np.asarray(gold)
    if metric != "pearson_spearman":
        return sum(w * metric_on_rows(metric, np.asarray(p)[rows], gold[rows]) for w, p in zip(reading.weights, reading.predictions))
    gold_rows, gold_ranks = gold[rows].astype(np.float64), resampled_ranks(gold, rows)  # ranked once for every point
    return sum(w * 50.0 * (_pearson(np.asarray(p, dtype=np.float64)[rows], gold_rows)
                           + _pearson(resampled_ranks(np.asarray(p), rows), gold_ranks))
               for w, p in zip(reading.weights, reading.predictions))


def verdict(low: float, high: float) -> str:
    """``holds`` (interval above 0), ``fails`` (below 0) or ``no difference detected``."""
    return HOLDS if low > 0 else FAILS if high < 0 else NO_DIFFERENCE


def paired_difference(metric: str, gold: list[np.ndarray], side_a: list[Reading], side_b: list[Reading],
                      confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The mean over seeds of quality(A) - quality(B), and its paired bootstrap interval.

    Args:
        metric: the task's metric.
        gold: per seed, the test labels ``[n]`` both sides were scored on (same n for every seed).
        side_a, side_b: per seed (same order as ``gold``), each side's ``Reading``.
        confidence: the interval's level; resamples: bootstrap resamples; seed: their generator's seed.

    Returns:
        ``{"difference", "low", "high", "seeds", "rows", "confidence", "verdict"}``.
    """
    if not (len(gold) == len(side_a) == len(side_b)) or not gold:
        raise ValueError(f"one reading per seed on each side: {len(gold)} seeds, {len(side_a)} and {len(side_b)} readings")
    n = len(gold[0])
    if any(len(g) != n for g in gold):
        raise ValueError(f"every seed must score the same number of test rows, got {[len(g) for g in gold]}")
    S = len(gold)

    def per_seed(rows: np.ndarray | None) -> np.ndarray:
        # [..., S]: each seed's A - B on the row resample
        return np.stack([reading_quality(metric, a, g, rows) - reading_quality(metric, b, g, rows)
                         for g, a, b in zip(gold, side_a, side_b)], axis=-1)

    difference = float(per_seed(None).mean())

    def statistic(rows, *seeds, axis=-1):
        d = per_seed(rows)  # [r, S] (or [S] on one resample)
        if not seeds:
            return d.mean(-1)
        return np.take_along_axis(d, seeds[0], axis=-1).mean(-1)

    data = (np.arange(n),) + ((np.arange(S),) if S >= 2 else ())
    result = bootstrap(data, statistic, paired=False, vectorized=True, n_resamples=resamples, batch=200,
                       confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not np.isfinite(low) or not np.isfinite(high):  # no spread at all (percentile of a constant)
        low = high = difference
    return {"difference": difference, "low": low, "high": high, "seeds": S, "rows": n, "confidence": confidence,
            "verdict": verdict(low, high)}


def format_interval(result: dict | None, digits: int = 1) -> str:
    """``"+1.2 [+0.3, +2.1] holds (3 seeds)"``; ``"—"`` without a result."""
    if result is None:
        return "—"
    seeds = f"{result['seeds']} seed{'s' if result['seeds'] != 1 else ''}"
    return (f"{result['difference']:+.{digits}f} [{result['low']:+.{digits}f}, {result['high']:+.{digits}f}] "
            f"{result['verdict']} ({seeds})")


def interpolation_weights(xs: list[float], target: float) -> list[tuple[int, float]] | None:
    """``[(index into xs, weight)]`` such that ``sum w * y[index]`` is ``models.tradeoff.quality_at``'s
    reading of points at ``xs`` (test speed-ups) at ``target``: linear between the two points
    around it, the slowest point's value below them; None beyond the largest x (not reached)."""
    if not xs:
        return None
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    x = max(target, xs[order[0]])
    if x > xs[order[-1]]:
        return None
    for i, j in zip(order, order[1:]):
        if xs[i] <= x <= xs[j]:
            if xs[j] == xs[i]:
                return [(i, 1.0)]
            t = (x - xs[i]) / (xs[j] - xs[i])
            return [(i, 1.0 - t), (j, t)] if 0 < t < 1 else [(j if t >= 1 else i, 1.0)]
    return [(order[0], 1.0)]
