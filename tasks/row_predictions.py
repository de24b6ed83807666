"""Per-row test predictions of an evaluated model, kept beside its numbers so a report can
resample test rows (``tasks.reports.intervals``).

``test_rows.npz`` holds ``labels [n]`` and one ``[n]`` prediction vector per evaluated setting,
keyed ``"<criterion>:<index>"`` (the index into that criterion's sweep in ``curves.json``; a
single-point model: ``"point:0"``; every row forced to exit at layer k: ``"layer:<k>"``, k = 1..L):
class ids (int16), or scalars for regression (float32).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tasks.io import atomic_write_bytes

ROWS_FILE = "test_rows.npz"
SINGLE_POINT = "point:0"
LAYER = "layer"  # "layer:<k>": every row at exit k (1-based)


def row_key(criterion: str, index: int) -> str:
    """The key of sweep point ``index`` of ``criterion`` in ``test_rows.npz``."""
    return f"{criterion}:{index}"


def write_test_rows(out_dir: Path, labels, predictions: dict[str, np.ndarray], regression: bool) -> Path:
    """Writes ``out_dir/test_rows.npz`` atomically; returns its path. Byte-reproducible: numpy (2.x)
    stamps every member with a fixed date, not the time of writing."""
    dtype = np.float32 if regression else np.int16
    arrays = {"labels": np.asarray(labels, dtype=dtype), **{k: np.asarray(v, dtype=dtype) for k, v in predictions.items()}}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(Path(out_dir) / ROWS_FILE, buf.getvalue())


def read_test_rows(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(labels [n], {key: predictions [n]})`` of a ``test_rows.npz``."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays.pop("labels"), arrays
