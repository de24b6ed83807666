"""The default pipeline end to end on a tiny backbone and tiny data (integration)."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUN = "artifacts/sst2/seed-42"  # the tiny project's task and seed (flows/layout.py)
pytestmark = pytest.mark.integration

def declared_outputs(root: Path, strategies, task, seed=42):
    """Every path the repository's dvc.yaml declares as an output of a default-pipeline stage."""
    from flows.registry import dvc_stages
    from tasks.versioning import DEFAULT_STAGES

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == dvc_stages()  # every stage is a registered method's (or the comparison's)
    assert set(DEFAULT_STAGES) <= set(stages)
    outs = []
    for name, stage in stages.items():
        if name not in DEFAULT_STAGES:
            continue
        body, items = (stage["do"], strategies) if "foreach" in stage else (stage, [None])
        for item in items:
            for entry in body.get("outs", []) + body.get("metrics", []) + body.get("plots", []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                path = path.replace("${item}", str(item)).replace("${train.task}", task).replace("${seed}", str(seed))
                outs.append(root / path)
    return outs


def test_pipeline_writes_mlflow_runs_dvc_outputs_and_reruns_from_cache(project, prefect_harness, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.pipeline import exitflow_pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # the lock a run reads is tagged on every run
    report = exitflow_pipeline(str(project / "params.yaml"))

    # DVC: data snapshot pinned by data.dvc; every dvc.yaml output exists
    assert (project / "data.dvc").exists()
    missing = [p for p in declared_outputs(project, ["joint", "alternating"], "sst2") if not p.exists()]
    assert missing == []

    # report: full model + every criterion per strategy, the single-exit full model and HashEE, then
    # ConsistentEE (full model + the criteria but LTE + its policy), then Past-Future (full model + entropy)
    from config.params import load_params

    criteria = load_params(project / "params.yaml").evaluate.criteria
    rows = [(r["strategy"], r["criterion"]) for r in report["rows"]]
    for strategy in ("joint", "alternating"):
        assert [c for s, c in rows if s == strategy][0] == "full model"
        assert sorted(c for s, c in rows if s == strategy) == sorted(["full model", *criteria])
    assert sorted(c for s, c in rows if s == "consistentee") == sorted(
        ["full model", *(c for c in criteria if c != "lte"), "policy"])
    assert [s for s, _ in rows if s not in ("joint", "alternating", "consistentee")] == [
        "single (full model)", "hashee (token-level)", "past-future (concat)", "past-future (concat)"]
    past_future = [r for r in report["rows"] if r["strategy"] == "past-future (concat)"]
    assert [r["criterion"] for r in past_future] == ["full model", "entropy"]
    assert past_future[1]["layer_speedup"] > 1.0 and past_future[1].get("wallclock_bs4") is not None
    assert {r["criterion"] for r in report["rows"]} == {"full model", "static", "maxprob", "entropy", "patience", "lte",
                                                        "frequency hash, B=3", "policy"}

    # MLflow: parent run, nested strategy runs, nested criterion runs, registered model versions
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("test-spine")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == ["alternating", "consistentee-hardness-a0.1",
                                                         "hashee-frequency-Lall-B3-cls", "joint", "past-future-concat"]
    joint = next(r for r in children if r.info.run_name == "joint")
    assert "full_depth_test_quality" in joint.data.metrics and "dev_layer_3" in joint.data.metrics
    grandchildren = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == joint.info.run_id]
    assert len(grandchildren) == 5
    assert len(client.get_metric_history(joint.info.run_id, "layerwise_test")) == 3
    check_schema(client, project, runs, parents[0])

    # HashEE's classifier reads [CLS] (hashee.pooling), the single-exit reference keeps train.pooling
    def pooling(ckpt):
        return json.loads((project / ckpt / "exitflow.json").read_text())["exits"]["pooling"]

    assert pooling(f"{RUN}/hashee/default/train/checkpoint") == "cls"
    assert pooling(f"{RUN}/reference/single-exit/checkpoint") == "mean"

    # cached re-run: no training, no evaluation
    weights = project / RUN / "train/joint/checkpoint/exits.safetensors"
    metrics = project / RUN / "evaluate/joint/metrics.json"
    stamps = (weights.stat().st_mtime_ns, metrics.stat().st_mtime_ns)
    exitflow_pipeline(str(project / "params.yaml"))
    assert (weights.stat().st_mtime_ns, metrics.stat().st_mtime_ns) == stamps

    # a deleted output is rebuilt instead of served stale from the cache; training stays cached
    (project / RUN / "evaluate/joint/result.json").unlink()
    exitflow_pipeline(str(project / "params.yaml"))
    assert weights.stat().st_mtime_ns == stamps[0]
    assert metrics.stat().st_mtime_ns != stamps[1]


def check_schema(client, project, runs, parent):
    """The default run reads like tasks.metric_schema: every run described, with provenance,
    identity and datasets; every method's runs share the keys; curves ordered by speed-up; the
    one sort answers "best at 2x"; ConsistentEE says why it stopped; the registry explains itself."""
    import mlflow

    from flows.champions import holder_dev_score
    from tasks.metric_schema import RECOMMENDED_ALIAS, VERSION_TAGS
    from tests.flows.mlflow_schema import best_at_2x, check_criterion_runs, check_experiment, md5

    check_experiment(client, project, "test-spine")
    criterion_runs = check_criterion_runs(client, runs)
    assert {r.data.params["method"] for r in criterion_runs} == {"berxit", "consistentee", "past-future"}
    by_name = {r.info.run_name: r for r in runs}
    hashee = by_name["hashee-frequency-Lall-B3-cls"]
    assert {"test_quality", "layer_speedup", "flops_speedup", "reference_test_quality"} <= set(hashee.data.metrics)
    assert "full_test_quality" not in hashee.data.metrics and hashee.data.params["criterion"] == "hash"
    best = best_at_2x(client, "test-spine")
    assert best.info.run_name == parent.data.tags["best_run_at_2x"]
    lock_md5, data_md5 = md5(project / "dvc.lock"), yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert {(r.data.tags["dvc.lock_md5"], r.data.tags["dvc.data_md5"]) for r in runs} == {(lock_md5, data_md5)}

    cee = by_name["consistentee-hardness-a0.1"]
    rounds_run = int(cee.data.metrics["rounds_run"])
    assert cee.data.tags["stop_reason"] and 1 <= cee.data.metrics["best_round"] <= rounds_run
    assert [m.step for m in client.get_metric_history(cee.info.run_id, "round_dev_objective")] == list(
        range(1, rounds_run + 1))

    versions = client.search_model_versions("name='tiny-exits'")
    assert len(versions) == 2
    for v in versions:
        assert "shipped_criterion" in v.description and set(VERSION_TAGS) <= set(v.tags), v.tags
        assert mlflow.models.get_model_info(f"models:/tiny-exits/{v.version}").signature is not None
    holder, score = holder_dev_score(client, "tiny-exits", RECOMMENDED_ALIAS)
    assert score == max(float(v.tags["dev_score"]) for v in versions)
    assert {v.tags["strategy"] for v in versions} == {"joint", "alternating"}
    names = [m.name for m in client.search_logged_models([parent.info.experiment_id])]
    assert len(names) == len(set(names)) and {"joint", "alternating", "consistentee-hardness-a0-1"} <= set(names), names


def test_training_resumes_from_last_finished_epoch(project, prefect_harness, monkeypatch):
    """Kill training after epoch 1 of 2; the re-run starts at epoch 2 and matches an uninterrupted run."""
    import json

    import models.training as training
    from config.params import load_params
    from tasks.data import prepare_task
    from tasks.train import train_multi_exit

    params = load_params(project / "params.yaml", ["train.epochs=2"])
    prepare_task("sst2", params.data, project / "src", project / "data")
    kw = dict(train=params.train, backbone=params.backbone, strategy="joint", data_dir=project / "data", seed=1)
    full = train_multi_exit.fn(out_dir=project / "uninterrupted", **kw)

    original, calls = training.train_epoch, []

    def crash_on_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr("models.fitting.train_epoch", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_multi_exit.fn(out_dir=project / "resumed", **kw)
    assert (project / "resumed/_resume/state.pt").exists() and not (project / "resumed/result.json").exists()
    calls.clear()
    monkeypatch.setattr("models.fitting.train_epoch", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    resumed = train_multi_exit.fn(out_dir=project / "resumed", **kw)
    assert len(calls) == 1  # only epoch 2 ran
    assert resumed["dev_layer_scores"] == pytest.approx(full["dev_layer_scores"])
    history = json.loads((project / "resumed/history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_hashee_study_trains_every_configuration_once_and_reports(project, prefect_harness, monkeypatch):
    from flows.hashee import hashee_study

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    report = hashee_study(str(project / "params.yaml"), ["hashee.study_kinds=[frequency, mi]",
                                                        "hashee.study_grid=[[3, 3], [2, 2]]"])
    assert [r["hash"] for r in report["rows"]] == ["frequency-Lall-B3-cls", "mi-Lall-B3-cls", "frequency-L3-B3-cls",
                                                   "frequency-L2-B2-cls"]
    assert all(r["flops_speedup"] > 1.0 for r in report["rows"])
    # the reported quality is the saved HashEE model's real test accuracy, recomputed here
    import torch

    from tasks.backbones import load_checkpoint
    from config.params import load_params
    from tasks.features import encode_split
    from tasks.hashee import predict

    params = load_params(project / "params.yaml")
    for row in report["rows"][:2]:
        model, tok, _ = load_checkpoint(project / RUN / f"hashee/study/{row['hash']}/train/checkpoint", "eager")
        enc = encode_split(project / "data", "sst2", "test", tok, params.backbone.max_length, None, None, 0)
        accuracy = 100.0 * (predict(model, enc, 4, 0).argmax(-1) == torch.tensor(enc["labels"])).double().mean().item()
        assert row["quality"] == pytest.approx(accuracy)
    two_layer = next(r for r in report["rows"] if r["hash"] == "frequency-L2-B2-cls")
    assert two_layer["flops_speedup"] > 1.5  # a 2-layer model of a 3-layer backbone saves at least a third
    assert (project / RUN / "hashee/study/results.md").exists()
