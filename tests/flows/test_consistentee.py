"""ConsistentEE end to end on the tiny backbone: two rounds, MLflow records, resume after a crash."""

import json

import pytest

pytestmark = pytest.mark.integration

TINY = ["consistentee.rounds=2", "consistentee.early_stop=false", "consistentee.copies=2",
        "consistentee.forgetting_evals_per_epoch=3", "train.epochs=2"]


def test_two_rounds_log_histograms_spearman_and_compare_with_baselines(project, prefect_harness, monkeypatch):
    from mlflow.tracking import MlflowClient
    import mlflow

    from config.params import load_params
    from flows.consistentee import consistentee_pipeline
    from tests.flows.mlflow_schema import check_criterion_runs, check_experiment

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = consistentee_pipeline(str(project / "params.yaml"), TINY)
    base = project / "artifacts/sst2/seed-42/consistentee"
    assert out["best_round"] == 2  # no early stop: the last round is the model
    for r in (1, 2):
        mem = json.loads((base / f"default/rounds/round-{r}/memorized/result.json").read_text())
        assert mem["rows"] == 48 and sum(mem["histogram"]) == 48 and len(mem["histogram"]) == 3
        assert (base / f"default/rounds/round-{r}/train/checkpoint/exits.safetensors").exists()
    dynamics = __import__("torch").load(base / "init/train_dynamics.pt", weights_only=False)
    assert tuple(dynamics["predictions"].shape) == (6, 3, 48)  # 3 evaluations x 2 epochs, 3 layers, 48 rows
    spearman = json.loads((base / "default/hardness/spearman.json").read_text())
    assert spearman["evaluations"] == 6
    init_m = __import__("torch").load(base / "default/rounds/round-1/memorized/memorized.pt", weights_only=False)
    # recompute Table 1 independently: forgetting events counted by hand on the last exit
    from scipy.stats import spearmanr

    right = (dynamics["predictions"][:, -1] == dynamics["labels"]).tolist()  # [E][n]
    forgotten = [sum(right[e - 1][i] and not right[e][i] for e in range(1, len(right))) for i in range(48)]
    m = init_m["memorized_layer"].tolist()
    for key, other in (("spearman_loss", init_m["final_loss"].tolist()), ("spearman_forgetting", forgotten)):
        if len(set(m)) == 1 or len(set(other)) == 1:  # undefined only when one side is constant
            assert spearman[key] is None
        else:
            assert spearman[key] == pytest.approx(spearmanr(m, other).statistic)
    metrics = json.loads((base / "default/evaluate/metrics.json").read_text())
    assert "policy" in metrics["operating_points"] and metrics["fixed_points"]["policy"]["threshold"] == 0.5
    assert "lte" not in metrics["operating_points"]  # no LTE module on a ConsistentEE model
    assert metrics["real_vs_simulated_mismatches"]["policy"] == 0

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("exitflow-consistentee")
    runs = client.search_runs([exp.experiment_id])
    name = load_params(project / "params.yaml", TINY).consistentee.name
    rounds = sorted((r for r in runs if "/round-" in r.info.run_name), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in rounds] == [f"consistentee-{name}/round-1", f"consistentee-{name}/round-2"]
    for r, result in zip(rounds, (1, 2)):
        mem = json.loads((base / f"default/rounds/round-{result}/memorized/result.json").read_text())
        assert "dev_objective" in r.data.metrics and "policy_reward" in r.data.metrics
        assert [a.path for a in client.list_artifacts(r.info.run_id, "memorized_layer")] == ["memorized_layer/histogram.png"]
        shares = [r.data.metrics[f"memorized_layer_share_layer_{k}"] for k in (1, 2, 3)]
        assert shares == pytest.approx([c / sum(mem["histogram"]) for c in mem["histogram"]])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    # the schema: why it stopped and the per-round series on the parent; every run described, with provenance
    assert parent.data.tags["stop_reason"].startswith("max_rounds (2)") and parent.data.metrics["best_round"] == 2
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "round_dev_objective")] == [1, 2]
    check_experiment(client, project, "exitflow-consistentee")
    assert {r.data.params["criterion"] for r in check_criterion_runs(client, runs)} == set(metrics["operating_points"])
    assert "mean_forgetting_events" in parent.data.metrics
    assert ("spearman_loss" in parent.data.metrics) == (spearman["spearman_loss"] is not None)
    assert "hardness/spearman.md" in [a.path for a in client.list_artifacts(parent.info.run_id, "hardness")]
    assert "report/results.md" in [a.path for a in client.list_artifacts(parent.info.run_id, "report")]


def test_interrupted_run_resumes_from_the_last_finished_round(project, prefect_harness, monkeypatch):
    import models.consistentee as cee
    from flows.consistentee import consistentee_pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original, calls = cee.train_heads_epoch, []

    def crash_in_round_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr("models.consistentee.train_heads_epoch", crash_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        consistentee_pipeline(str(project / "params.yaml"), TINY)
    round1 = project / "artifacts/sst2/seed-42/consistentee/default/rounds/round-1/train/checkpoint/exits.safetensors"
    init = project / "artifacts/sst2/seed-42/consistentee/init/checkpoint/exits.safetensors"
    stamps = (init.stat().st_mtime_ns, round1.stat().st_mtime_ns)
    assert not (project / "artifacts/sst2/seed-42/consistentee/default/rounds/round-2/train/result.json").exists()

    calls.clear()
    monkeypatch.setattr("models.consistentee.train_heads_epoch", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    out = consistentee_pipeline(str(project / "params.yaml"), TINY)
    assert len(calls) == 1  # only round 2's heads step ran
    assert (init.stat().st_mtime_ns, round1.stat().st_mtime_ns) == stamps
    assert out["best_round"] == 2
