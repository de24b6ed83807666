"""Cross-run task caching whose key sees everything that matters (STYLE.md rule 9).

Prefect's ``TASK_SOURCE`` hashes only the task's own lines; exitflow's key also covers the
config sections passed in, the content of every input artifact (``Path`` arguments other than
``out_dir`` / ``cache_dir``), and the source of the ``models/`` and ``tasks/`` packages. A
re-run with unchanged inputs is served from the cache. ``run_cached`` forces a refresh instead
of a stale hit when the task's output stamp (``out_dir/result.json``) is gone, or when
``out_dir`` was last written by a call with other inputs (its ``.inputs-key`` differs): a cached
result must describe the files that are actually on disk.

The ``.inputs-key`` stamp lies inside DVC-tracked folders, so it names paths as artifacts record
them (``tasks.io.portable_path``): the same project in another folder writes the same stamp.
Prefect's key adds the absolute ``out_dir``, because a task returns absolute paths: a project
copied elsewhere must not be served results that point into the original.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from pydantic import BaseModel

from tasks.io import RESULT_FILE, atomic_write_text, portable_path, tree_hash

REPO_ROOT = Path(__file__).resolve().parent.parent
NOT_HASHED = {"logger", "out_dir", "cache_dir"}


def code_hash() -> str:
    """Hash of the Python source of the packages tasks run."""
    return hashlib.sha256("".join(tree_hash(REPO_ROOT / pkg, (".py",)) for pkg in ("models", "tasks")).encode()).hexdigest()


def _value_key(value: Any, anchor: Path) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, Path):
        where = portable_path(value, anchor)
        return f"{where}:{tree_hash(value)}" if value.exists() else f"{where}:missing"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_key(v, anchor) for v in value) + "]"
    return repr(value)


def inputs_key(task_name: str, inputs: dict[str, Any]) -> str:
    """Task name + config + input-artifact content hashes + code hash.

    Paths enter as ``portable_path`` relative to the project holding ``out_dir`` (the working
    directory when there is none), so the key does not change when the project moves.
    """
    anchor = Path(inputs.get("out_dir") or ".")
    h = hashlib.sha256(task_name.encode())
    for name in sorted(inputs):
        h.update(name.encode())
        value = inputs[name]
        if name in ("out_dir", "cache_dir"):
            h.update((portable_path(value, anchor) if value is not None else "None").encode())
        elif name not in NOT_HASHED:
            h.update(_value_key(value, anchor).encode())
    h.update(code_hash().encode())
    return h.hexdigest()


class ArtifactCachePolicy(CachePolicy):
    """Key = ``inputs_key`` of the task's name and arguments, plus the absolute ``out_dir``."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> str:
        where = str(Path(inputs["out_dir"]).absolute()) if inputs.get("out_dir") is not None else ""
        return hashlib.sha256(f"{inputs_key(task_ctx.task.name, inputs)}|{where}".encode()).hexdigest()


ARTIFACT_CACHE = ArtifactCachePolicy()
STAMP = ".inputs-key"


def run_cached(task, out_dir: Path, **kwargs):
    """Call a Prefect task; refresh its cache when ``out_dir`` does not hold this call's outputs."""
    out_dir = Path(out_dir)
    key = inputs_key(task.name, {"out_dir": out_dir, **kwargs})
    stamp = out_dir / STAMP
    stale = not (out_dir / RESULT_FILE).exists() or not stamp.exists() or stamp.read_text() != key
    result = task.with_options(refresh_cache=stale)(out_dir=out_dir, **kwargs)
    atomic_write_text(stamp, key)
    return result
