"""Cache keys see a task's declared inputs and the source it runs, and nothing else."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks import caching
from tasks.caching import ARTIFACT_CACHE
from config.params import BackboneConfig, TrainConfig
from tasks.metric_logger import NullLogger
from tasks.train import train_multi_exit


@pytest.fixture
def call(tmp_path):
    """A project holding data and the out_dir of a ``train_multi_exit`` call (required arguments only)."""
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.txt").write_text("1\n")
    return {"train": TrainConfig(), "backbone": BackboneConfig(), "strategy": "joint",
            "data_dir": tmp_path / "data", "out_dir": tmp_path / "artifacts" / "train" / "joint"}


def prefect_key(task, inputs: dict) -> str:
    """The key Prefect asks the task's cache policy for (it binds defaults itself; we pass what the caller did)."""
    return ARTIFACT_CACHE.compute_key(task_ctx=SimpleNamespace(task=task), inputs=inputs, flow_parameters={})


def test_unhashed_and_default_arguments_do_not_change_the_key(call, tmp_path):
    variants = [
        {**call, "logger": NullLogger()},
        {**call, "logger": None},
        {**call, "cache_dir": tmp_path / "cache"},
        {**call, "seed": 42, "device": "auto", "cache_dir": None, "num_layers": None},  # the defaults, passed explicitly
    ]
    for variant in variants:
        assert prefect_key(train_multi_exit, variant) == prefect_key(train_multi_exit, call), sorted(variant)
        assert caching.inputs_key(train_multi_exit, variant) == caching.inputs_key(train_multi_exit, call)
    assert prefect_key(train_multi_exit, {**call, "seed": 1}) != prefect_key(train_multi_exit, call)
    assert prefect_key(train_multi_exit, {**call, "strategy": "alternating"}) != prefect_key(train_multi_exit, call)


def copy_sources(dest: Path) -> Path:
    for package in ("models", "tasks"):
        shutil.copytree(caching.REPO_ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_only_the_source_a_task_runs_changes_its_key(call, tmp_path, monkeypatch):
    src = copy_sources(tmp_path / "src")
    monkeypatch.setattr(caching, "REPO_ROOT", src)
    before = prefect_key(train_multi_exit, call)
    with open(src / "tasks" / "reports" / "default_run.py", "a") as f:
        f.write("\n# a report edit\n")
    assert prefect_key(train_multi_exit, call) == before
    with open(src / "models" / "objectives.py", "a") as f:
        f.write("\n# an objective edit\n")
    assert prefect_key(train_multi_exit, call) != before


def test_closure_of_train_follows_its_imports_into_models():
    closure = caching.source_closure("tasks.train")
    root = caching.REPO_ROOT
    for module in ("tasks.train", "models.objectives", "models.exiting", "models.adapters", "models.adapters.bert"):
        assert module in closure, module
    assert closure["models.objectives"] == root / "models" / "objectives.py"
    assert closure["models.adapters"] == root / "models" / "adapters" / "__init__.py"
    assert not any(m.startswith("tasks.reports") for m in closure)


def test_closure_resolves_function_level_relative_and_package_imports(tmp_path, monkeypatch):
    files = {
        "models/__init__.py": "",
        "models/a.py": "def f():\n    from models.b import g\n    return g\n",
        "models/b.py": "from . import c\n\ndef g():\n    return c\n",
        "models/c.py": "",
        "models/sub/__init__.py": "from .d import x\n",
        "models/sub/d.py": "import torch\nx = 1\n",
        "models/imported_by_the_package.py": "",
        "tasks/__init__.py": "",
        "tasks/unused.py": "",
        "tasks/t.py": "import models.a\nfrom models.sub import x\nfrom flows import pipeline\n",
        "flows/pipeline.py": "import tasks.unused\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(caching, "REPO_ROOT", tmp_path)
    # importing ``models`` imports every module in it (registries): all of them are in the closure;
    # flows/ is not a hashed package, so what only it imports stays out
    assert set(caching.source_closure("tasks.t")) == {
        "tasks", "tasks.t", "models", "models.a", "models.b", "models.c", "models.sub", "models.sub.d",
        "models.imported_by_the_package"}


def test_the_stamp_of_a_task_call_is_the_same_in_another_folder(tmp_path):
    keys = []
    for root in (tmp_path / "a", tmp_path / "x" / "y" / "b"):
        (root / "data").mkdir(parents=True)
        (root / "data" / "rows.txt").write_text("1\n")
        (root / "params.yaml").write_text("seed: 1\n")
        keys.append(caching.inputs_key(train_multi_exit, {
            "train": TrainConfig(), "backbone": BackboneConfig(), "strategy": "joint", "data_dir": root / "data",
            "out_dir": root / "artifacts" / "train", "cache_dir": root / "artifacts" / "cache"}))
    assert keys[0] == keys[1]
