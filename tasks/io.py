"""Atomic artifact writes, content hashes, and the paths artifacts record.

Every artifact is written to a temporary sibling and renamed into place, so a failure never
leaves a half-written file or directory behind. A full disk (``ENOSPC``, a quota) during a write
becomes ``models.errors.DiskFullError`` naming the folder and the bytes needed when known (the
CLI: one line, exit 3). A writer killed before its rename (``kill -9``) leaves the temporary
sibling, named with its pid; the next write of the same target deletes it.

Artifacts must not depend on where the project lives: a path an artifact records (a
``result.json`` field, a checkpoint's ``hash_table_dir``, a cache stamp) is written relative to
the project root, the nearest folder holding ``params.yaml`` (``portable_path``). Wall-clock
measurements go to ``timing.json`` files of their own (``TIMING_FILE``), so that regenerating the
artifacts on another machine changes nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

PROJECT_MARKER = "params.yaml"  # the project root holds it (paths in params.yaml resolve against it)
TIMING_FILE = "timing.json"     # machine-dependent measurements, kept out of every other artifact
RESULT_FILE = "result.json"     # a task's stamp: what it returned, with portable paths


def is_disk_full(err: BaseException) -> bool:
    """``err`` says the disk (or the user's quota) is full; writers in Rust (safetensors) say it in words."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(err) or "Disk quota exceeded" in str(err)


def disk_full(folder: Path, needed: int | None = None):
    """The ``DiskFullError`` for a write into ``folder`` (``needed``: the bytes it was writing)."""
    from models.errors import DiskFullError

    free = shutil.disk_usage(folder).free if Path(folder).exists() else None
    size = f"{needed / 1e6:.1f} MB needed, " if needed is not None else ""
    left = f"{free / 1e6:.1f} MB free" if free is not None else "free space unknown"
    err = DiskFullError(f"no space left on the device writing to {folder} ({size}{left}); nothing half-written "
                        "was left: free some space and re-run (finished steps are kept)")
    err.errno = errno.ENOSPC
    return err


def _temporary_prefix(target: Path) -> str:
    """The start of this process's temporary siblings of ``target``: ``.<name>.<pid>.``."""
    return f".{target.name}.{os.getpid()}."


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc: take it as alive
        return True


def remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary siblings of ``target`` left by writers that died before renaming them
    (``kill -9``): ``.<name>.<pid>.<random>.tmp`` and ``.<name>.<pid>.old`` of a pid that is gone.
    A live writer's (another process sharing the folder) are kept."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.(?:[^.]+\.tmp|old)")
    for path in target.parent.glob(f".{glob.escape(target.name)}.*"):
        match = pattern.fullmatch(path.name)
        if match and not process_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full(path.parent, len(data)) from err
        raise
    return path


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_torch_save(path: Path, obj: Any) -> Path:
    """``torch.save`` through ``atomic_write_bytes``.

    The bytes depend only on ``obj``: saving to a buffer names the zip's inner folder
    ``archive`` whatever ``path`` is, records carry a fixed (1980) timestamp, and the
    serialization id is derived from the records (two processes write identical bytes).
    """
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temporary_prefix(target), suffix=".tmp"))
    try:
        try:
            yield tmp
        except Exception as err:  # a writer in the block ran out of space (save_pretrained, safetensors)
            from models.errors import DiskFullError

            if is_disk_full(err) and not isinstance(err, DiskFullError):
                raise disk_full(target.parent) from err
            raise
        if target.exists():
            old = target.with_name(f"{_temporary_prefix(target)}old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``md5``: DVC's content hash of one file)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hash(path: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """Content hash of a file or of every file below a directory (names and bytes)."""
    path = Path(path)
    if path.is_file():
        return file_hash(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts or p.name.startswith("."):
            continue
        if suffixes is not None and p.suffix not in suffixes:
            continue
        h.update(str(p.relative_to(path)).encode())
        h.update(file_hash(p).encode())
    return h.hexdigest()


def project_root(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds ``params.yaml`` (None outside a project)."""
    path = Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        if (folder / PROJECT_MARKER).is_file():
            return folder
    return None


def portable_path(path: Path | str, anchor: Path) -> str:
    """``path`` as an artifact records it: relative to the project root above ``anchor``, with
    POSIX separators (``artifacts/train/joint/checkpoint``; ``../shared/data/conll2003`` for a
    folder beside the project, as ``params.yaml`` names it). Absolute only when ``anchor`` is in
    no project."""
    path = os.path.abspath(path)
    root = project_root(anchor)
    if root is None:
        return Path(path).as_posix()
    return Path(os.path.relpath(path, root)).as_posix()


def _recorded(value: Any, out_dir: Path, portable: bool) -> Any:
    if isinstance(value, Path):
        return portable_path(value, out_dir) if portable else str(value)
    if isinstance(value, dict):
        return {k: _recorded(v, out_dir, portable) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_recorded(v, out_dir, portable) for v in value]
    return value


def write_result(out_dir: Path, result: dict) -> dict:
    """Write a task's ``out_dir/result.json`` stamp and return what the task returns.

    ``Path`` values (at any depth) are recorded with ``portable_path`` in the file and returned
    as plain strings of the paths as given (absolute in the flows), which the flows use to open them.
    """
    atomic_write_json(Path(out_dir) / RESULT_FILE, _recorded(result, Path(out_dir), portable=True))
    return _recorded(result, Path(out_dir), portable=False)


def with_timing(metrics: dict, timing: dict) -> dict:
    """``metrics`` with ``timing``'s entries merged in (nested dicts key by key)."""
    out = dict(metrics)
    for key, value in timing.items():
        out[key] = with_timing(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_metrics(folder: Path) -> dict:
    """``folder/metrics.json`` with the wall-clock entries of ``folder/timing.json`` (when present)
    merged back in, for reports that show both."""
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    timing = Path(folder) / TIMING_FILE
    return with_timing(metrics, json.loads(timing.read_text())) if timing.exists() else metrics
