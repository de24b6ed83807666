"""The same pipeline in two folders writes byte-identical artifacts; only the timing files differ (integration).

Two projects with the same params (same backbone, same source data) live at paths of different
lengths. After prepare -> train (joint) -> evaluate and the HashEE pipeline, every file under
``data/`` and ``artifacts/`` must hash the same in both, except the declared timing files and
the token cache (``artifacts/cache``, not an output). The second project starts with the first
one's token cache, as a re-run on a machine that has tokenised before would: a warm cache must
not change any artifact either.
"""

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from tests.flows.conftest import make_backbone, make_sst2

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def timing_outputs() -> set[str]:
    """The timing files ``dvc.yaml`` declares (uncached metrics), with ``${item}`` left as is."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = set()
    for stage in stages.values():
        body = stage.get("do", stage)
        for entry in body.get("metrics", []):
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            if Path(path).name == "timing.json":
                assert opts.get("cache") is False, f"{path}: a timing file must not be cached"
                declared.add(path)
    return declared


def output_hashes(project: Path) -> dict[str, str]:
    files = [p for d in ("data", "artifacts") for p in (project / d).rglob("*")
             if p.is_file() and not p.is_relative_to(project / "artifacts" / "cache")]
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_project(project: Path) -> None:
    from flows.hashee import hashee_pipeline
    from flows.pipeline import exitflow_stage

    params = str(project / "params.yaml")
    exitflow_stage("prepare", params)
    exitflow_stage("train", params, "joint")
    exitflow_stage("evaluate", params, "joint")
    hashee_pipeline(params)


def test_two_folders_write_identical_artifacts_except_timings(tmp_path, prefect_harness, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_backbone(tmp_path / "backbone")  # one backbone for both: its path is a config value
    make_sst2(tmp_path / "src")
    params = {
        "data": {"source_dir": "src", "tasks": ["sst2"]},
        "backbone": {"name": str(tmp_path / "backbone"), "attn_implementation": "eager", "max_length": 16},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "strategies": ["joint"]},
        "hashee": {"buckets": 3},
        "evaluate": {"sweep_points": 5, "timing_rows": 8, "timing_repeats": 1, "timing_batch_sizes": [1, 4]},
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "test-repro", "registered_model": "tiny-repro"},
    }
    projects = [tmp_path / "a", tmp_path / "somewhere" / "much" / "deeper" / "b"]
    for project in projects:
        shutil.copytree(tmp_path / "src", project / "src")
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        if project != projects[0]:
            shutil.copytree(projects[0] / "artifacts" / "cache", project / "artifacts" / "cache")
        run_project(project)

    hashes = [output_hashes(p) for p in projects]
    assert sorted(hashes[0]) == sorted(hashes[1])
    timing_files = {f for f in hashes[0] if Path(f).name == "timing.json"}
    differ = sorted(f for f in hashes[0] if f not in timing_files and hashes[0][f] != hashes[1][f])
    assert differ == []
    assert timing_files == {"artifacts/sst2/seed-42/evaluate/joint/timing.json",
                            "artifacts/sst2/seed-42/hashee/default/evaluate/timing.json"}
    assert {"artifacts/${train.task}/seed-${seed}/evaluate/${item}/timing.json",
            "artifacts/${train.task}/seed-${seed}/hashee/default/evaluate/timing.json"} <= timing_outputs()
    # the checks above would pass on empty folders: the artifacts that matter are there
    run = "artifacts/sst2/seed-42"
    for f in (f"{run}/train/joint/checkpoint/backbone/tokenizer.json", f"{run}/train/joint/result.json",
              f"{run}/evaluate/joint/metrics.json", f"{run}/hashee/default/train/checkpoint/exitflow.json",
              f"{run}/reference/single-exit/checkpoint/exitflow.json", f"{run}/hashee/default/table/.inputs-key",
              "data/sst2/meta.json"):
        assert f in hashes[0]
