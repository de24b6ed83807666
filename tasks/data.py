"""Data preparation: ELUE TSVs (or the HF hub, or user-declared files) -> validated Parquet.

Output layout (tracked by ``data.dvc``)::

    data/<task>/{train,dev,test}.parquet   columns text_a, text_b (nullable), label
    data/<task>/meta.json                  task spec, row counts, source hashes

Quirks handled (see shared/README.md): UTF-8 byte-order marks, CRLF line ends, MRPC's two
header layouts (``Quality`` vs ``label``), CSV quoting with doubled quotes in some test files,
float labels. A malformed row stops with ``DataError`` naming file, line and problem; so do a
non-UTF-8 byte and an unclosed quote (every row must sit on one line). Blank lines are skipped
with one warning per file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from models.errors import ExitflowError
from config.params import SPLITS, DataConfig, TaskSpec
from tasks.failpoints import failpoint
from tasks.io import atomic_dir, file_hash

csv.field_size_limit(sys.maxsize)
log = logging.getLogger(__name__)


class DataError(ExitflowError, ValueError):
    """Input data is missing or malformed; the message says where and what."""


def _elue(files: dict, text: list[str], **kw) -> TaskSpec:
    return TaskSpec(files=files, text_columns=text, **kw)


def _splits(task: str, names=SPLITS) -> dict[str, str]:
    return {s: f"{task}/{s}.tsv" for s in names}


BUILTIN_TASKS: dict[str, TaskSpec] = {
    "sst2": _elue(_splits("sst2"), ["sentence"]),
    "mrpc": _elue(_splits("mrpc"), ["#1 String", "#2 String"], label_column=["Quality", "label"],
                  metric="acc_f1", csv_quoted=["test"]),
    "stsb": _elue(_splits("stsb"), ["sentence1", "sentence2"], label_type="float",
                  metric="pearson_spearman", csv_quoted=["test"]),
    "snli": _elue(_splits("snli", ("dev", "test")), ["premise", "hypothesis"], num_labels=3),
    "scitail": _elue(_splits("scitail", ("dev", "test")), ["premise", "hypothesis"]),
}

# hub name -> (dataset, config, {our split: hub split}, text columns); GLUE hides test labels,
# so from the hub ``test`` is GLUE's validation split and ``dev`` a seeded 10% of train.
HUB_TASKS = {
    "glue/sst2": ("glue", "sst2", ["sentence"]),
    "glue/mrpc": ("glue", "mrpc", ["sentence1", "sentence2"]),
    "glue/stsb": ("glue", "stsb", ["sentence1", "sentence2"]),
    "glue/rte": ("glue", "rte", ["sentence1", "sentence2"]),
    "snli": ("snli", None, ["premise", "hypothesis"]),
}


def task_spec(task: str, data: DataConfig) -> TaskSpec:
    """The spec of a built-in or ``data.custom`` task; unknown names list the valid ones."""
    if task in data.custom:
        return data.custom[task]
    if task in BUILTIN_TASKS:
        return BUILTIN_TASKS[task]
    known = sorted(set(BUILTIN_TASKS) | set(data.custom))
    raise DataError(f"unknown task {task!r}; choose one of {', '.join(known)} or declare it under data.custom")


def _parse_label(raw: str, spec: TaskSpec, where: str):
    raw = raw.strip()
    if spec.regression:
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"{where}: label {raw!r} is not a number (regression task)") from None
        if not math.isfinite(value):
            raise DataError(f"{where}: label {raw!r} is not finite")
        return value
    if spec.label_names:
        if raw not in spec.label_names:
            raise DataError(f"{where}: label {raw!r} is not one of {spec.label_names}")
        return spec.label_names.index(raw)
    try:
        value = int(raw)
    except ValueError:
        raise DataError(f"{where}: label {raw!r} is not an integer class id") from None
    if not 0 <= value < spec.num_labels:
        raise DataError(f"{where}: label {value} is outside 0..{spec.num_labels - 1}")
    return value


def _read_utf8(path: Path) -> str:
    """The file's text without a leading BOM; bytes that are not UTF-8 stop with line and byte offset."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: byte 0x{data[err.start]:02x} at byte offset {err.start} is not valid UTF-8 "
                        f"({err.reason}); the file must be UTF-8 (a byte-order mark is fine)") from None


def _records(path: Path, quoted: bool):
    """Yield ``(line_number, fields)`` of the non-blank lines; the first is the header.

    Handles BOM and CRLF. Every row must sit on one line: a quoted field holding a line end (or,
    in a TSV, a tab) is an unclosed quote, so the rows parsed always match the file's non-blank
    lines. Skipped blank lines are logged once per file.
    """
    suffix = path.suffix.lower()
    lines = io.StringIO(_read_utf8(path), newline="")
    blank: list[int] = []
    if suffix == ".jsonl":
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                blank.append(i)
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{i}: invalid JSON ({err.msg})") from None
    else:
        delimiter = "," if suffix == ".csv" else "\t"
        quoting = csv.QUOTE_MINIMAL if (quoted or suffix == ".csv") else csv.QUOTE_NONE
        reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, doublequote=True)
        breaks, ends = ("\r\n\t", "tab or line end") if delimiter == "\t" else ("\r\n", "line end")
        start = 1  # the line the next record starts on
        try:
            for fields in reader:
                bad = next((k for k, x in enumerate(fields, start=1) if any(c in x for c in breaks)), None)
                if bad is not None:
                    runs_on = f"; it runs on to line {reader.line_num}" if reader.line_num > start else ""
                    raise DataError(
                        f"{path}:{start}: field {bad} opens a quote that is not closed before the next {ends}{runs_on}; "
                        f'expected each row on one line with every quoted field closed (a literal quote is written "")')
                if any(x.strip() for x in fields):
                    yield start, fields
                else:
                    blank.append(start)
                start = reader.line_num + 1
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: {err}") from None
    if blank:
        log.warning("%s: skipped %d blank line%s (first at line %d)", path, len(blank), "s" * (len(blank) > 1), blank[0])


def read_split(path: Path, spec: TaskSpec, split: str) -> dict[str, list]:
    """Read and validate one split file into columns ``text_a``, ``text_b``, ``label``."""
    if not path.exists():
        raise DataError(f"{path}: file not found (task split {split!r})")
    rows = {"text_a": [], "text_b": [], "label": []}
    header: list[str] | None = None
    for line, record in _records(path, split in spec.csv_quoted):
        where = f"{path}:{line}"
        if isinstance(record, dict):
            fields = record
        else:
            if header is None:
                header = [h.strip() for h in record]
                continue
            if len(record) != len(header):
                raise DataError(f"{where}: expected {len(header)} tab-separated fields, found {len(record)}")
            fields = dict(zip(header, record))
        label_keys = [spec.label_column] if isinstance(spec.label_column, str) else spec.label_column
        label_key = next((k for k in label_keys if k in fields), None)
        if label_key is None:
            raise DataError(f"{where}: no label column (looked for {label_keys}); columns: {list(fields)}")
        texts = []
        for col in spec.text_columns:
            if col not in fields:
                raise DataError(f"{where}: missing text column {col!r}; columns: {list(fields)}")
            value = str(fields[col]).strip()
            if not value:
                raise DataError(f"{where}: empty text in column {col!r}")
            texts.append(value)
        rows["text_a"].append(texts[0])
        rows["text_b"].append(texts[1] if len(texts) > 1 else None)
        rows["label"].append(_parse_label(str(fields[label_key]), spec, where))
    if not rows["label"]:
        raise DataError(f"{path}: no data rows")
    return rows


def _hub_splits(hub_name: str, seed: int) -> dict[str, dict[str, list]]:
    """Load a task from the HF hub via ``datasets`` (needs network)."""
    if hub_name not in HUB_TASKS:
        raise DataError(f"unknown hub task {hub_name!r}; choose one of {', '.join(HUB_TASKS)}")
    import datasets

    name, config, text = HUB_TASKS[hub_name]
    ds = datasets.load_dataset(name, config)
    ds = ds.filter(lambda r: r["label"] is not None and r["label"] >= 0)
    held = ds["train"].train_test_split(test_size=0.1, seed=seed)
    parts = {"train": held["train"], "dev": held["test"], "test": ds["validation"]}
    out = {}
    for split, part in parts.items():
        out[split] = {
            "text_a": list(part[text[0]]),
            "text_b": list(part[text[1]]) if len(text) > 1 else [None] * len(part),
            "label": list(part["label"]),
        }
    return out


def prepare_task(task: str, data: DataConfig, source_dir: Path, out_dir: Path, seed: int = 42) -> dict:
    """Validate one task's splits and write them atomically under ``out_dir/<task>``.

    Returns the task's ``meta.json`` contents (row counts, spec, source hashes).
    """
    spec = task_spec(task, data)
    if task in data.hub:
        columns, sources = _hub_splits(data.hub[task], seed), {"hub": data.hub[task]}
    else:
        if not source_dir.exists():
            raise DataError(
                f"data source directory {source_dir} does not exist; put the ELUE TSVs there "
                f"(layout <task>/<split>.tsv), set data.source_dir, or load the task from the hub "
                f"with data.hub: {{{task}: glue/{task}}}"
            )
        columns, sources = {}, {}
        for split, rel in spec.files.items():
            path = (source_dir / rel) if not Path(rel).is_absolute() else Path(rel)
            columns[split] = read_split(path, spec, split)
            sources[split] = file_hash(path)
    string = pa.string()
    label_type = pa.float64() if spec.regression else pa.int64()
    schema = pa.schema([("text_a", string), ("text_b", string), ("label", label_type)])
    meta = {"task": task, "spec": spec.model_dump(mode="json"), "rows": {}, "sources": sources}
    with atomic_dir(out_dir / task) as tmp:
        for split, cols in columns.items():
            pq.write_table(pa.table(cols, schema=schema), tmp / f"{split}.parquet")
            meta["rows"][split] = len(cols["label"])
            failpoint("prepare.split")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def load_meta(data_dir: Path, task: str) -> dict:
    path = data_dir / task / "meta.json"
    if not path.exists():
        raise DataError(f"prepared data for task {task!r} not found at {path.parent}; run `exitflow prepare` first")
    return json.loads(path.read_text())


def load_columns(data_dir: Path, task: str, split: str) -> dict[str, list]:
    meta = load_meta(data_dir, task)
    if split not in meta["rows"]:
        raise DataError(f"task {task!r} has no {split!r} split (available: {', '.join(meta['rows'])})")
    return pq.read_table(data_dir / task / f"{split}.parquet").to_pydict()


from prefect import task  # noqa: E402


@task(name="prepare_data", retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=lambda task, run, state: "ConnectionError" in str(state.message or ""))
def prepare_data(data: DataConfig, source_dir: Path, out_dir: Path, seed: int = 42) -> dict:
    """Prepare every task in ``data.tasks`` under ``out_dir``; returns ``{task: meta}``.

    Retries only on connection errors (hub downloads); bad data fails at once.
    """
    return {task_name: prepare_task(task_name, data, source_dir, out_dir, seed) for task_name in data.tasks}
