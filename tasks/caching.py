"""Cross-run task caching whose key sees everything that matters (STYLE.md rule 9).

Prefect's ``TASK_SOURCE`` hashes only the task's own lines; exitflow's key also covers the
config sections passed in, the content of every input artifact (``Path`` arguments other than
``out_dir`` / ``cache_dir``), and the source of the ``models/`` and ``tasks/`` packages. A
re-run with unchanged inputs is served from the cache; if the task's output stamp
(``out_dir/result.json``) is gone, ``run_cached`` forces a refresh instead of a stale hit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from pydantic import BaseModel

from tasks.io import tree_hash

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


class ArtifactCachePolicy(CachePolicy):
    """Key = task name + config + input-artifact content hashes + code hash."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> str:
        h = hashlib.sha256(task_ctx.task.name.encode())
        for name in sorted(inputs):
            h.update(name.encode())
            value = inputs[name]
            h.update((str(value) if name in ("out_dir", "cache_dir") else "" if name in NOT_HASHED else _value_key(value)).encode())
        h.update(code_hash().encode())
        return h.hexdigest()


ARTIFACT_CACHE = ArtifactCachePolicy()


def run_cached(task, out_dir: Path, **kwargs):
    """Call a Prefect task; refresh its cache when its output stamp is missing."""
    stale = not (Path(out_dir) / "result.json").exists()
    return task.with_options(refresh_cache=stale)(out_dir=out_dir, **kwargs)
