"""What a comparison cell must reproduce when it is re-run from nothing (``exitflow reproduce-cell``,
``flows.compare_reproduce``), and how two runs of it are compared: exactly, figure by figure
(floats as JSON keeps them) and per-row test prediction by prediction. One exception: a sweep
threshold is a score of the model, and its last float32 bits depend on the order of float
reductions (the torch thread count, the CPU kind), so thresholds equal to 1e-5 relative count as
"float tails", reported apart; every decision they make is checked through the per-row predictions.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ExitflowError
from tasks.row_predictions import read_test_rows

MACHINE_DEPENDENT = ("wallclock_speedup",)  # a timed point's keys that depend on the machine, not the model
THRESHOLD_TOLERANCE = 1e-5  # relative: float32 rounding of a score (eps 1.2e-7) over a few dozen reduction steps


def quality_figures(cell: dict) -> dict:
    """What must reproduce of a cell's JSON (``ComparisonCell.to_json`` / ``CellSummary.to_json``):
    every figure except paths and the machine-dependent wall-clock of its timed points."""
    timed = {c: {k: v for k, v in point.items() if k not in MACHINE_DEPENDENT} for c, point in cell["timed"].items()}
    return {"metric": cell["metric"], "num_layers": cell["num_layers"], "full": cell["full"], "series": cell["series"],
            "timed": timed, "at_chance": cell.get("at_chance")}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key in value for k, v in _flatten(value[key], f"{prefix}.{key}" if prefix else str(key)).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def _float_tail(path: str, a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` at ``path`` differ only in float32 rounding: a sweep threshold (a score
    of the model, float32) within ``THRESHOLD_TOLERANCE`` relative. Summation order changes those
    last bits (another torch thread count, another CPU kind) without changing a decision."""
    return (path.endswith(".threshold") and isinstance(a, float) and isinstance(b, float)
            and abs(a - b) <= THRESHOLD_TOLERANCE * max(abs(a), abs(b)))


def figure_differences(recorded: dict, rerun: dict) -> tuple[int, list[str], list[float]]:
    """``(figures compared, ["<path>: recorded X, re-run Y", ...], float tails)`` over two
    ``quality_figures``: every figure must be equal, except thresholds, which may differ in float32
    rounding (``_float_tail``; each such one's relative difference is in the third element). A figure
    present on one side only is a difference."""
    a, b = _flatten(json.loads(json.dumps(recorded))), _flatten(json.loads(json.dumps(rerun)))
    missing, diffs, tails = "(absent)", [], []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k, missing), b.get(k, missing)
        if x == y:
            continue
        if _float_tail(k, x, y):
            tails.append(abs(x - y) / max(abs(x), abs(y)))
        else:
            diffs.append(f"{k}: recorded {x}, re-run {y}")
    return len(set(a) | set(b)), diffs, tails


def _read_rows(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``read_test_rows``; a damaged file is an ``ExitflowError`` naming it."""
    try:
        return read_test_rows(path)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ExitflowError(f"{path}: not a readable per-row predictions file ({type(err).__name__}: {err}); "
                            "re-run the comparison unit that wrote it") from None


def row_differences(recorded: Path, rerun: Path) -> tuple[int, list[str]]:
    """``(arrays compared, differences)`` between two ``test_rows.npz``: labels and every sweep
    point's per-row predictions, exactly."""
    (labels_a, preds_a), (labels_b, preds_b) = _read_rows(recorded), _read_rows(rerun)
    arrays_a, arrays_b = {"labels": labels_a, **preds_a}, {"labels": labels_b, **preds_b}
    diffs = []
    for key in sorted(set(arrays_a) | set(arrays_b)):
        x, y = arrays_a.get(key), arrays_b.get(key)
        if x is None or y is None:
            diffs.append(f"test rows {key}: {'recorded' if y is None else 're-run'} only")
        elif x.shape != y.shape or not np.array_equal(x, y):
            differing = int((x != y).sum()) if x.shape == y.shape else "shape"
            diffs.append(f"test rows {key}: {differing} of {len(x)} rows differ")
    return len(set(arrays_a) | set(arrays_b)), diffs


def figures_digest(cell: dict) -> str:
    """sha256 of a cell's ``quality_figures``: a verdict records it, so a report whose cell changed
    since (a retrained model) shows the verdict as stale."""
    return hashlib.sha256(json.dumps(quality_figures(cell), sort_keys=True).encode()).hexdigest()


def _thresholds_differ(n: int) -> str:
    return f"{n} threshold differs" if n == 1 else f"{n} thresholds differ"


def reproduction_result(verdict: dict) -> str:
    """A verdict (``exitflow reproduce-cell``'s ``result.json``) in words: ``re-run failed: <why>``,
    ``identical`` (every figure and per-row prediction equal), ``same figures; N thresholds differ in
    float32 tails (max relative X)``, ``same figures; per-row predictions not compared`` or ``N differences``."""
    if verdict.get("error"):
        return f"re-run failed: {verdict['error']}"
    if not verdict["same_figures"]:
        n = len(verdict["differences"])
        return f"{n} difference" if n == 1 else f"{n} differences"
    if verdict["identical"]:
        return "identical"
    tails = verdict["threshold_float_tails"]
    if not verdict.get("row_arrays_compared"):
        return "same figures; per-row predictions not compared" + (
            f", {_thresholds_differ(tails)} in float32 tails" if tails else "")
    return (f"same figures; {_thresholds_differ(tails)} in float32 tails "
            f"(max relative {verdict['max_threshold_relative_difference']:.1e})")
