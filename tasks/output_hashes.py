"""Checked cache hits: a step's stamp records the hashes of what it wrote, a hit re-checks them.

``run_cached`` serves a step from the cache only while its ``out_dir`` holds what the step wrote.
After the step runs, ``record_outputs`` writes ``out_dir/.outputs-sha256``: one
``<sha256>  <path>`` line per output file, paths relative to ``out_dir``, sorted (the format of
``sha256sum``: ``cd out_dir && sha256sum -c .outputs-sha256`` checks it by hand). It names no
absolute path, so the same project in another folder writes the same bytes. Before a hit,
``changed_output`` hashes the folder again and compares.

What a changed output does, by ``EXITFLOW_VERIFY`` (or ``exitflow --verify``):
``rebuild`` (default) prints one line naming the file and runs the step again; ``strict`` refuses
(``OutputsChangedError``, exit 2) and says what to do; ``off`` hashes nothing (hits as before).

Not recorded: hidden names, ``timing.json`` (``NOT_OUTPUTS``) and subfolders holding a stamp of their own (another
step's output). A stamp from before this check (no ``.outputs-sha256``) is adopted: the files as
they are become the record.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from pathlib import Path

from models.errors import ExitflowError
from tasks.io import TIMING_FILE, atomic_write_text, file_hash

OUTPUT_HASHES = ".outputs-sha256"
# names the record leaves out (fnmatch patterns): hidden ones -- the stamps (.inputs-key,
# .outputs-sha256), a lock file, the temporary files and folders of atomic writes --, and
# timing.json, wall-clock measurements that differ per run by design (tasks.io.TIMING_FILE)
NOT_OUTPUTS = (".*", TIMING_FILE, "__pycache__")
OTHER_STEP = ".inputs-key"  # a subfolder holding this stamp is another step's out_dir
VERIFY_ENV = "EXITFLOW_VERIFY"
MODES = ("rebuild", "strict", "off")


class OutputsChangedError(ExitflowError):
    """A finished step's output changed on disk and ``EXITFLOW_VERIFY=strict`` refuses to rebuild it."""


def verify_mode() -> str:
    """``EXITFLOW_VERIFY``: ``rebuild`` (default), ``strict`` or ``off``."""
    mode = os.environ.get(VERIFY_ENV, "").strip().lower() or "rebuild"
    if mode not in MODES:
        raise ExitflowError(f"{VERIFY_ENV}={mode!r}: choose one of {', '.join(MODES)}")
    return mode


def output_files(out_dir: Path) -> list[str]:
    """The step's output files below ``out_dir``, as sorted POSIX paths relative to it."""
    found, todo = [], [Path(out_dir)]
    while todo:
        with os.scandir(todo.pop()) as entries:
            entries = list(entries)
        for entry in entries:
            if any(fnmatch.fnmatch(entry.name, pattern) for pattern in NOT_OUTPUTS):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if not (path / OTHER_STEP).exists():
                    todo.append(path)
            elif entry.is_file():
                found.append(path.relative_to(out_dir).as_posix())
    return sorted(found)


def hash_outputs(out_dir: Path, seen: dict | None = None) -> dict[str, str]:
    """``{relative path: sha256}`` of ``output_files(out_dir)``. ``seen`` (filled in) reuses the
    hash of a file whose inode, size and mtime are those it had when hashed before."""
    seen = {} if seen is None else seen
    hashes = {}
    for rel in output_files(out_dir):
        stat = os.stat(Path(out_dir) / rel)
        identity = (rel, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if identity not in seen:
            seen[identity] = file_hash(Path(out_dir) / rel)
        hashes[rel] = seen[identity]
    return hashes


def read_record(out_dir: Path) -> dict[str, str] | None:
    """The recorded hashes (None without a record, or an unreadable one)."""
    try:
        lines = (Path(out_dir) / OUTPUT_HASHES).read_text(encoding="utf-8").splitlines()
        return dict(reversed(line.split("  ", 1)) for line in lines)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def record_outputs(out_dir: Path, seen: dict | None = None) -> None:
    """Write ``out_dir/.outputs-sha256`` for the files there now (unless ``EXITFLOW_VERIFY=off``)."""
    if verify_mode() == "off":
        return
    hashes = hash_outputs(out_dir, seen)
    atomic_write_text(Path(out_dir) / OUTPUT_HASHES, "".join(f"{h}  {rel}\n" for rel, h in hashes.items()))


def changed_output(out_dir: Path, step: str, seen: dict | None = None) -> bool:
    """Whether a cache hit of ``step`` must be rebuilt because a file in ``out_dir`` changed since
    the step wrote it (said in one line); ``strict`` mode raises ``OutputsChangedError`` instead."""
    mode = verify_mode()
    recorded = read_record(out_dir) if mode != "off" else None
    if recorded is None:  # off, or a stamp from before the check: adopted by record_outputs
        return False
    now = hash_outputs(out_dir, seen)
    differ = sorted(set(recorded) ^ set(now) | {rel for rel in recorded.keys() & now.keys() if recorded[rel] != now[rel]})
    if not differ:
        return False
    rel = differ[0]
    what = "is missing" if rel not in now else "was added" if rel not in recorded else "changed"
    more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
    path = Path(out_dir) / rel
    if mode == "strict":
        raise OutputsChangedError(f"{path} {what} since step {step} wrote it{more}; restore it (`dvc checkout`) or "
                                  f"delete {out_dir} and re-run to rebuild it ({VERIFY_ENV}=strict)")
    print(f"{path} {what} since step {step} wrote it{more}: rebuilding {out_dir}", file=sys.stderr, flush=True)
    return True
