"""Cross-run task caching whose key sees everything that matters (STYLE.md rule 9).

Prefect's ``TASK_SOURCE`` hashes only the task's own lines; exitflow's key also covers the
config sections passed in, the content of every input artifact (``Path`` arguments other than
``out_dir`` / ``cache_dir``), and the source of the ``models/`` and ``tasks/`` packages. A
re-run with unchanged inputs is served from the cache. ``run_cached`` forces a refresh instead
of a stale hit when the task's output stamp (``out_dir/result.json``) is gone, or when
``out_dir`` was last written by a call with other inputs (its ``.inputs-key`` differs): a cached
result must describe the files that are actually on disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from pydantic import BaseModel

from tasks.io import atomic_write_text, tree_hash

REPO_ROOT = Path(__file__).resolve().parent.parent
NOT_HASHED = {"logger", "out_dir", "cache_dir"}


def code_hash() -> str:
    """Hash of the Python source of the packages tasks run."""
    return hashlib.sha256("".join(tree_hash(REPO_ROOT / pkg, (".py",)) for pkg in ("models", "tasks")).encode()).hexdigest()


def _value_key(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, Path):
        return f"{value}:{tree_hash(value)}" if value.exists() else f"{value}:missing"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_key(v) for v in value) + "]"
    return repr(value)


def inputs_key(task_name: str, inputs: dict[str, Any]) -> str:
    """Task name + config + input-artifact content hashes + code hash."""
    h = hashlib.sha256(task_name.encode())
    for name in sorted(inputs):
        h.update(name.encode())
        value = inputs[name]
        h.update((str(value) if name in ("out_dir", "cache_dir") else "" if name in NOT_HASHED else _value_key(value)).encode())
    h.update(code_hash().encode())
    return h.hexdigest()


class ArtifactCachePolicy(CachePolicy):
    """Key = ``inputs_key`` of the task's name and arguments."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> str:
        return inputs_key(task_ctx.task.name, inputs)


ARTIFACT_CACHE = ArtifactCachePolicy()
STAMP = ".inputs-key"


def run_cached(task, out_dir: Path, **kwargs):
    """Call a Prefect task; refresh its cache when ``out_dir`` does not hold this call's outputs."""
    out_dir = Path(out_dir)
    key = inputs_key(task.name, {"out_dir": out_dir, **kwargs})
    stamp = out_dir / STAMP
    stale = not (out_dir / "result.json").exists() or not stamp.exists() or stamp.read_text() != key
    result = task.with_options(refresh_cache=stale)(out_dir=out_dir, **kwargs)
    atomic_write_text(stamp, key)
    return result
