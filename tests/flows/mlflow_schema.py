"""Checks, through ``MlflowClient``, that a flow's runs follow ``tasks.metric_schema``: shared
keys, curves in increasing speed-up, descriptions, provenance, datasets, a leaderboard on the parent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flows.tracking import OWNER_HOST, OWNER_PID, dvc_folder_md5
from tasks.metric_schema import (EVERY_RUN, GIT_COMMIT, KEYS, LEARNABILITY_RUN, NOTE, PREPARED_TASK_RUN, TARGET_SPEEDUPS,
                                 at_key)

USER_PATHS = ("backbone.name", "generate.decoder")  # params the test project sets to a folder of its own (user input, not ours)
SPLITS, DIFFICULTY = "train / dev / test datasets", "difficulty datasets"  # the schema's dataset entries


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def run_kinds(run, project: Path) -> set[str]:
    """The schema's run kinds (``tasks.metric_schema.RUN_KINDS``) ``run`` is one of."""
    kinds = {EVERY_RUN}
    task = run.data.params.get("task", "-")
    if task != "-" and (project / "data" / task).is_dir():
        kinds.add(PREPARED_TASK_RUN)
    if run.data.params.get("method") == "learnability":
        kinds.add(LEARNABILITY_RUN)
    return kinds


def carried(kinds: set[str], kind: str) -> list[str]:
    """The key names of ``kind`` (param, tag, metric, dataset) that ``KEYS`` puts on runs of ``kinds``."""
    return [n for k in KEYS if k.kind == kind and set(k.carried_by) & kinds for n in k.names()]


NOT_CARRIED_METRICS = [n for k in KEYS if k.kind == "metric" and not k.carried_by for n in k.names() if "<" not in n]


def check_experiment(client, project: Path, name: str, task: str | None = "sst2") -> list:
    """Every run of experiment ``name`` holds what ``KEYS`` says its run kinds carry: identity params,
    description, git commit and dirty flag; a prepared task's three splits as datasets (digest =
    DVC's md5 of the file), a learnability run's difficulty datasets (digest = DVC's hash of the
    folder at ``source``, a relative path), no other dataset; a learnability run none of the
    operating metrics; no machine path in a param or tag; some run on ``task`` (None: no run is on
    a prepared task); each parent's leaderboard headline equals the best run below it. Returns the runs."""
    experiment = client.get_experiment_by_name(name)
    assert experiment.tags.get(NOTE, "").startswith("exitflow experiment")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert runs
    def digests(name: str) -> dict:
        return {f"{name}-{split}": md5(project / "data" / name / f"{split}.parquet") for split in ("train", "dev", "test")}

    for run in runs:
        where, kinds = run.info.run_name, run_kinds(run, project)
        assert set(carried(kinds, "param")) <= set(run.data.params), f"{where}: identity params missing"
        assert set(carried(kinds, "tag")) <= set(run.data.tags), f"{where}: tags missing"
        assert run.data.tags[NOTE], f"{where}: no description"
        assert len(run.data.tags[GIT_COMMIT]) >= 7 and run.data.tags["git_dirty"] in ("true", "false"), where
        datasets = carried(kinds, "dataset")
        logged = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
        expected = digests(run.data.params["task"]) if SPLITS in datasets else {}
        if DIFFICULTY in datasets:
            assert logged and all(n.startswith("difficulty-") for n in logged), f"{where}: datasets {list(logged)}"
            for d in logged.values():
                source = json.loads(d.source)["uri"]
                assert not Path(source).is_absolute() and d.digest == dvc_folder_md5(project / source), (where, d)
                expected[d.name] = d.digest
            assert not set(NOT_CARRIED_METRICS) & set(run.data.metrics), f"{where}: operating keys on a learnability run"
        assert {n: d.digest for n, d in logged.items()} == expected, f"{where}: datasets {list(logged)}"
        values = {**{k: v for k, v in run.data.params.items() if k not in USER_PATHS}, **run.data.tags}
        absolute = [k for k, v in values.items() if str(project) in v or v.startswith(("/", "file:"))]
        assert not absolute, f"{where}: machine paths in {absolute}"
    if task is None:
        assert not any(PREPARED_TASK_RUN in run_kinds(r, project) for r in runs)
    else:
        assert any(r.data.params["task"] == task for r in runs)
    for parent in [r for r in runs if "mlflow.parentRunId" not in r.data.tags]:
        assert parent.data.tags[OWNER_PID].isdigit() and parent.data.tags[OWNER_HOST], parent.info.run_name
        below = [r for r in runs if r.info.run_id != parent.info.run_id]
        scored = [r for r in below if at_key(2.0) in r.data.metrics]
        if scored:
            assert parent.data.metrics[f"best_{at_key(2.0)}"] == max(r.data.metrics[at_key(2.0)] for r in scored)
            assert "leaderboard.json" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    return runs


OPERATING_KEYS = ("dev_quality", "test_quality", "layer_speedup", "flops_speedup", "full_depth_test_quality")


def check_criterion_runs(client, runs: list, keys: tuple[str, ...] = OPERATING_KEYS) -> list:
    """Every criterion run (one with a curve): the shared ``keys``, and curves whose steps are the
    speed-up x 100 in increasing order. Returns those runs."""
    criterion_runs = [r for r in runs if "curve_test_quality" in r.data.metrics]
    assert criterion_runs
    for run in criterion_runs:
        where = run.info.run_name
        assert run.data.params["criterion"] != "-", where
        assert set(keys) <= set(run.data.metrics), where
        assert "full_test_quality" not in run.data.metrics and "operating_test_quality" not in run.data.metrics
        data = json.loads(Path(client.download_artifacts(run.info.run_id, "curve.json")).read_text())
        column = {name: [row[i] for row in data["data"]] for i, name in enumerate(data["columns"])}
        assert column["test_layer_speedup"] == sorted(column["test_layer_speedup"]), f"{where}: curve.json order"
        for split in ("test", "dev"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, f"curve_{split}_quality")]
            assert steps == sorted(round(100 * x) for x in column[f"{split}_layer_speedup"]), f"{where}: {split} steps"
    return criterion_runs


def check_versions(client, name: str, alias: str) -> list:
    """Every version of registered model ``name``: a description, the schema's identity and
    choice tags, a signature; ``alias`` on the version with the highest ``dev_score``."""
    import mlflow

    versions = client.search_model_versions(f"name='{name}'")
    for v in versions:
        assert v.description and {"method", "task", "seed", "criterion", "threshold", "dev_score", "git_commit"} <= set(
            v.tags), (name, v.version, v.tags)
        assert mlflow.models.get_model_info(f"models:/{name}/{v.version}").signature is not None
    holder = client.get_model_version_by_alias(name, alias)
    assert float(holder.tags["dev_score"]) == max(float(v.tags["dev_score"]) for v in versions)
    return versions


def best_at_2x(client, experiment_name: str):
    """The reviewer's one sort: the run with the best test quality at 2x."""
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id], f"metrics.{at_key(2.0)} > -1",
                              order_by=[f"metrics.{at_key(2.0)} DESC"], max_results=1)[0]


__all__ = ["TARGET_SPEEDUPS", "best_at_2x", "check_criterion_runs", "check_experiment", "check_versions"]
