"""Cross-run task caching whose key sees everything that matters, and only that (STYLE.md rule 9).

Prefect's ``TASK_SOURCE`` hashes only the task's own lines; exitflow's key covers the task's
arguments, bound to its signature (a default keys the same as passing it), with config sections
by value, input artifacts (``Path`` arguments) by content, ``out_dir`` by location, and
``NOT_HASHED`` ones (``logger``, ``cache_dir``: they never change what a task computes) not at
all; plus the source of the task's module and of every ``models``/``tasks``/``config`` module it imports,
transitively (``source_closure``), so editing the report does not retrain a model. Importing
``models`` imports every module in it (each method's exit modules register themselves), so the
closure of anything that imports ``models`` holds all of them.

A re-run with unchanged inputs is served from the cache. ``run_cached`` forces a refresh instead
of a stale hit when the task's output stamp (``out_dir/result.json``) is gone, or when
``out_dir`` was last written by a call with other inputs (its ``.inputs-key`` differs): a cached
result must describe the files that are actually on disk.

The ``.inputs-key`` stamp lies inside DVC-tracked folders, so it names paths as artifacts record
them (``tasks.io.portable_path``): the same project in another folder writes the same stamp.
Prefect's key adds the absolute ``out_dir``, because a task returns absolute paths: a project
copied elsewhere must not be served results that point into the original.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from prefect.cache_policies import CachePolicy
from pydantic import BaseModel

from tasks.io import RESULT_FILE, atomic_write_text, file_hash, portable_path, project_root, tree_hash
from tasks.locking import one_writer
from tasks.output_hashes import changed_output, record_outputs

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "tasks", "config")  # the project packages whose source enters a key
DISCOVERING = ("models",)  # packages whose __init__ imports every module in them (registries)
NOT_HASHED = {"logger", "cache_dir"}  # cache_dir only holds features keyed by their own source hash


def _module_file(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for path in (base.parent / f"{base.name}.py", base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _project_imports(path: Path, module: str, packages: tuple[str, ...] = PACKAGES) -> set[str]:
    """Dotted names of the project modules ``path`` imports anywhere (function bodies too), with
    their parent packages, whose ``__init__`` the import runs. ``from models.x import fn`` also
    yields ``models.x.fn`` (it could be a submodule); the caller drops names with no file."""
    names = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[:len(package) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # from pkg import submodule
    return {prefix for name in names if name.split(".")[0] in packages for prefix in _prefixes(name.split("."))}


def _package_modules(folder: Path) -> list[str]:
    """The modules and subpackages directly in ``folder`` (what ``pkgutil.iter_modules`` imports)."""
    return sorted({p.stem for p in folder.glob("*.py") if p.name != "__init__.py"}
                  | {p.parent.name for p in folder.glob("*/__init__.py")})


def _prefixes(parts: list[str]) -> list[str]:
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@functools.cache
def _closure(module: str, root: Path, packages: tuple[str, ...] = PACKAGES) -> tuple[tuple[str, Path], ...]:
    start = _module_file(module, root)
    if start is None and getattr(sys.modules.get(module), "__file__", None):
        start = Path(sys.modules[module].__file__)  # a task defined outside the project packages
    parents = module.split(".")[:-1]  # importing the module runs its packages' __init__ first
    found, todo = {}, [(module, start), *((m, _module_file(m, root)) for m in _prefixes(parents))]
    while todo:
        name, path = todo.pop()
        if path is None or name in found:
            continue
        found[name] = path
        todo.extend((m, _module_file(m, root)) for m in _project_imports(path, name, packages) if m not in found)
        if name in DISCOVERING:
            todo.extend((f"{name}.{m}", _module_file(f"{name}.{m}", root)) for m in _package_modules(path.parent))
    return tuple(sorted(found.items()))


def source_closure(module: str, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """``module``'s file and those of the ``packages`` modules (default ``models``/``tasks``/``config``)
    it imports, transitively, resolved statically with ``ast``. Computed once per module per process
    (edit a file's imports and a running process keeps the old closure; contents are re-read on
    every key)."""
    return dict(_closure(module, REPO_ROOT, tuple(packages)))


def code_hash(module: str, packages: tuple[str, ...] = PACKAGES) -> str:
    """Hash of the source of ``source_closure(module, packages)``."""
    h = hashlib.sha256()
    for name, path in source_closure(module, packages).items():
        h.update(f"{name}:{file_hash(path)}\n".encode())
    return h.hexdigest()


def _value_key(value: Any, anchor: Path) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, Path):
        where = portable_path(value, anchor)
        return f"{where}:{tree_hash(value)}" if value.exists() else f"{where}:missing"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_key(v, anchor) for v in value) + "]"
    return repr(value)


def inputs_key(task: Any, inputs: dict[str, Any]) -> str:
    """Key of a call of ``task`` (a Prefect task or its function) with ``inputs`` (argument name
    -> value): its name, its hashed arguments after binding defaults, and ``code_hash`` of its
    module. A bare name as ``task`` keys ``inputs`` as given, without code.

    Paths enter as ``portable_path`` relative to the project holding ``out_dir`` (the working
    directory when there is none), so the key does not change when the project moves.
    """
    fn: Callable | None = None
    if isinstance(task, str):
        name = task
    else:
        fn = inspect.unwrap(getattr(task, "fn", task))
        name = getattr(task, "name", fn.__name__)
        bound = inspect.signature(fn).bind_partial(**inputs)
        bound.apply_defaults()
        inputs = bound.arguments
    anchor = Path(inputs.get("out_dir") or ".")
    h = hashlib.sha256(f"{name}\n".encode())
    for arg in sorted(set(inputs) - NOT_HASHED):
        value = inputs[arg]
        if arg == "out_dir":
            key = portable_path(value, anchor) if value is not None else "None"
        else:
            key = _value_key(value, anchor)
        h.update(f"{arg}={key}\n".encode())
    if fn is not None:
        h.update(code_hash(fn.__module__).encode())
    return h.hexdigest()


class ArtifactCachePolicy(CachePolicy):
    """Key = ``inputs_key`` of the task and its arguments, plus the absolute ``out_dir``."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> str:
        where = str(Path(inputs["out_dir"]).absolute()) if inputs.get("out_dir") is not None else ""
        return hashlib.sha256(f"{inputs_key(task_ctx.task, inputs)}|{where}".encode()).hexdigest()


ARTIFACT_CACHE = ArtifactCachePolicy()
STAMP = ".inputs-key"


@one_writer  # holds out_dir's lock (tasks.locking): a second run waits, then finds the step done
def run_cached(task, out_dir: Path, **kwargs):
    """Call a Prefect task; refresh its cache when ``out_dir`` does not hold this call's outputs
    (another call's, or files changed since: ``tasks.output_hashes``)."""
    out_dir = Path(out_dir)
    key = inputs_key(task, {"out_dir": out_dir, **kwargs})
    stamp = out_dir / STAMP
    stale = not (out_dir / RESULT_FILE).exists() or not stamp.exists() or stamp.read_text() != key
    hashed = {}  # files hashed by the check, reused by the record when the step did not rewrite them
    stale = stale or changed_output(out_dir, getattr(task, "name", str(task)), hashed)
    result = task.with_options(refresh_cache=stale)(out_dir=out_dir, **kwargs)
    record_outputs(out_dir, hashed)
    atomic_write_text(stamp, key)
    return result


# ---- one training for every caller with the same inputs --------------------------------------------

SHARED_RESULT, REQUESTS = "result.json", "requests"


def location_free_key(task, index_dir: Path, **kwargs) -> str:
    """``inputs_key`` of a call with its ``out_dir`` left out (keyed as ``index_dir`` for every caller):
    equal for two calls that differ only in where they write."""
    return inputs_key(task, {**kwargs, "out_dir": Path(index_dir)})


def run_shared(task, out_dir: Path, index_dir: Path, **kwargs):
    """``run_cached``, except that a call whose inputs and code equal those of a call already
    finished in another folder is served that call's result (its paths point there) instead of
    running again. ``index_dir/<location-free key>/`` records where the first call wrote
    (``result.json``) and every folder that asked (``requests/``); ``shared_index`` reads them.
    Use it only where the caller takes the paths from the returned result (not from ``out_dir``)
    and no DVC stage expects ``out_dir`` filled. Two calls running at the same time may both train."""
    out_dir = Path(out_dir)
    entry = Path(index_dir) / location_free_key(task, index_dir, **kwargs)
    where = portable_path(out_dir, out_dir)
    atomic_write_text(entry / REQUESTS / hashlib.sha256(where.encode()).hexdigest()[:16], where)
    first = entry / SHARED_RESULT
    if first.exists():
        root = project_root(out_dir)
        other = Path(first.read_text().strip())
        other = other if other.is_absolute() or root is None else root / other
        stamp = other / STAMP
        if other != out_dir and (other / RESULT_FILE).exists() and stamp.exists() \
                and stamp.read_text() == inputs_key(task, {"out_dir": other, **kwargs}):
            return run_cached(task, out_dir=other, **kwargs)  # a cache hit in the first caller's folder
    result = run_cached(task, out_dir=out_dir, **kwargs)
    if not first.exists():
        atomic_write_text(first, where)
    return result


def shared_index(index_dirs: list[Path]) -> dict[str, list[str]]:
    """``{location-free key: sorted folders that asked}`` over every key under ``index_dirs`` whose
    model was trained (``run_shared``); folders as ``portable_path`` records them."""
    index: dict[str, set[str]] = {}
    for d in index_dirs:
        for entry in sorted(Path(d).iterdir()) if Path(d).is_dir() else ():
            if (entry / SHARED_RESULT).exists():
                asked = index.setdefault(entry.name, set())
                if (entry / REQUESTS).is_dir():
                    asked.update(p.read_text().strip() for p in (entry / REQUESTS).iterdir())
    return {key: sorted(asked) for key, asked in sorted(index.items())}


def shared_counts(index: dict[str, list[str]]) -> dict:
    """``{"requested", "trained"}`` of a ``shared_index``: folders that asked for a model, and models
    trained for them."""
    return {"requested": sum(len(asked) for asked in index.values()), "trained": len(index)}
