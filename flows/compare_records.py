"""Unit records of ``exitflow compare``: every finished grid unit kept in a folder meant to be
committed with the code (``compare.unit_records``; the standard profile keeps
``results/compare/standard``), so a lost machine loses its cache, not the grid's progress.

A record is ``<unit_records>/units/<unit name>/`` (``flows.compare_grid.unit_name``) holding
``test_rows.npz`` (the unit's per-row test predictions, copied) and ``unit.json``: the unit's key,
the sha256 of those rows, its cell summary, the machine and torch threads it ran on. ``unit.json``
is written last and atomically, and a record serves only when its rows hash as it says: a write
cut between the two files is no record.

**Key.** A record serves a unit only when its key equals the unit's (``unit_key``, computed once
per unit by the grid): sha256 over the unit's params less where and how the grid runs and what no
comparison cell reads (``artifacts_dir``, ``root``, ``device``, the ``data`` section, ``compare``
except ``timing_batch_size``, ``mlflow``, ``schedule``, ``profiles``, ``generate``,
``learnability``), the method variant, the device kind the unit runs on (cpu | cuda), the content
of the task's prepared data (``data/<task>``, which also holds every custom task's spec), and the
source of the method's flows module and every ``flows``/``models``/``tasks``/``config`` module it
imports, less the MLflow-only ``flows.tracking`` and ``flows.champions``. An edit in that source
re-keys the records: their units compute again (from this machine's cache when it has them).
Not keyed, by choice: the CPU kind and the torch thread count, which change float tails and not
the figures (``docs/concepts.md``; a record names both), and package versions, which
``scripts/bootstrap.sh`` pins (the prepared data's bytes carry pyarrow's version, so a new pyarrow
re-keys).

**Serving.** The grid serves every recorded unit before it starts any other, so a served unit
spends no budget (``flows.compare_grid.serve_recorded``). A served summary's checkpoint is where
the recording machine trained the model; on another machine it is absent, and the champion step
skips that cell (``flows.champions``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from config.params import Params
from flows.layout import Layout
from tasks.caching import PACKAGES, source_closure
from tasks.io import atomic_write_bytes, atomic_write_json, file_hash, portable_path, project_root, tree_hash
from tasks.reports.cells import CellSummary, UnitResult
from tasks.row_predictions import ROWS_FILE

UNITS_DIR, RECORD_FILE, SHARED_FILE = "units", "unit.json", "shared-trainings.json"
NOT_KEYED = {"artifacts_dir", "root", "device", "data", "compare", "mlflow", "schedule", "profiles", "generate", "learnability"}
NOT_KEYED_MODULES = {"flows.tracking", "flows.champions"}  # MLflow logging only: they change no cell


def kept_shared_index(params: Params, index: dict[str, list[str]]) -> dict[str, list[str]]:
    """``index`` (``tasks.caching.shared_index`` of this machine's cache) united with the one kept
    beside the records, which it then replaces, so the report counts the trainings shared on every
    machine the grid ran on; ``index`` as it is when the profile keeps no records."""
    if params.compare.unit_records is None:
        return index
    path = params.path(params.compare.unit_records) / SHARED_FILE
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {}
    united = {key: sorted({*kept.get(key, []), *index.get(key, [])}) for key in sorted({*kept, *index})}
    atomic_write_json(path, united)
    return united


def records_dir(params: Params) -> Path | None:
    """``compare.unit_records`` resolved against the project; None when the profile keeps none."""
    where = params.compare.unit_records
    return None if where is None else params.path(where) / UNITS_DIR


def device_kind(setting: str) -> str:
    """``cpu`` or ``cuda``: where a unit with ``device: setting`` runs on this machine."""
    import torch

    return "cuda" if setting != "cpu" and torch.cuda.is_available() else "cpu"


def unit_key(params: Params, module: str, method: str) -> str:
    """The key a unit's record must hold to serve it (see the module docstring); ``module``: the
    flows module of the method's comparison cell."""
    settings = params.model_dump(mode="json", exclude=NOT_KEYED)
    settings["compare"] = {"timing_batch_size": params.compare.timing_batch_size}
    data = Layout.from_params(params).data / params.train.task
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for part in (method, device_kind(params.device), tree_hash(data)):
        h.update(f"\n{part}".encode())
    for name, path in source_closure(module, (*PACKAGES, "flows")).items():
        if name not in NOT_KEYED_MODULES:
            h.update(f"\n{name}:{file_hash(path)}".encode())
    return h.hexdigest()


def read_record(folder: Path, key: str) -> UnitResult | None:
    """The unit result kept in record ``folder`` when its key is ``key`` and its files are whole;
    None otherwise (no record, another key, a damaged file: the unit computes and rewrites it)."""
    folder = Path(folder)
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
        if record["key"] != key or file_hash(folder / ROWS_FILE) != record["rows_sha256"]:
            return None
        summary = CellSummary.from_json(record["summary"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return UnitResult(replace(summary, test_rows=str(folder / ROWS_FILE), checkpoint=_absolute(summary.checkpoint, folder)),
                      None, 0.0)


def write_record(folder: Path, key: str, result: UnitResult, machine: str, threads: int) -> bool:
    """Keep ``result`` (a unit that trained, with per-row test predictions) as record ``folder``
    under ``key``; a record already holding ``key`` is left as it is. Returns whether it wrote."""
    folder, summary = Path(folder), result.summary
    if summary is None or summary.test_rows is None or read_record(folder, key) is not None:
        return False
    rows = Path(summary.test_rows).read_bytes()
    atomic_write_bytes(folder / ROWS_FILE, rows)
    kept = replace(summary, test_rows=ROWS_FILE, checkpoint=portable_path(summary.checkpoint, folder))
    atomic_write_json(folder / RECORD_FILE, {"key": key, "rows_sha256": hashlib.sha256(rows).hexdigest(),
                                             "summary": kept.to_json(), "machine": machine, "torch_threads": threads})
    return True


def _absolute(path: str, folder: Path) -> str:
    """A recorded checkpoint (relative to the project that holds ``folder``) as an absolute path."""
    root = project_root(folder)
    return path if Path(path).is_absolute() or root is None else str(root / path)

