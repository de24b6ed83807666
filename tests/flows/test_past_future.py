"""Global Past-Future end to end on the tiny backbone: models, comparison, MLflow, bad input."""

import json

import pytest

pytestmark = pytest.mark.integration

TINY = ["past_future.tasks=[sst2]", "past_future.strategies=[concat,vote]", "past_future.local=[weighted]",
        "past_future.speedups=[1.5,2.0]", "past_future.freeze_layers=1", "train.epochs=1"]


def test_settings_train_exit_and_compare_at_dev_chosen_speedups(project, prefect_harness, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.past_future import past_future_pipeline
    from models.operating import nearest_speedup

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reports = past_future_pipeline(str(project / "params.yaml"), TINY)
    base = project / "artifacts/sst2/seed-42/past_future"
    settings = ["concat", "concat-future", "vote", "local-weighted"]
    for s in settings:
        metrics = json.loads((base / f"models/{s}/evaluate/metrics.json").read_text())
        assert set(metrics["real_vs_simulated_mismatches"].values()) == {0}
    saved = json.loads((base / "models/concat-future/train/checkpoint/exitflow.json").read_text())
    assert saved["exits"]["head"] == "past_future"
    assert saved["exits"]["head_options"] == {"past": "concat", "future": True, "gate": "scalar"}

    comparison = json.loads((base / "report/comparison.json").read_text())
    methods = [r["method"] for r in comparison["rows"]]
    assert methods == ["concat (entropy)", "concat-future (entropy)", "vote (entropy)",
                       "local-weighted (entropy)", "local-weighted (patience)"]
    for row in comparison["rows"]:  # recomputed from the curves: the dev point nearest each target
        curve = json.loads((base / f"models/{row['setting']}/evaluate/curves.json").read_text())[row["criterion"]]
        for target in (1.5, 2.0):
            chosen = row["at"][f"{target:g}x"]
            best = min(abs(p["dev"]["layer_speedup"] - target) for p in curve)
            assert abs(chosen["dev_layer_speedup"] - target) == pytest.approx(best)
            assert chosen["test_quality"] == nearest_speedup(curve, target)["test"]["quality"]
    claim = comparison["claim"]
    on_target = {r["kind"] for r in comparison["rows"] if r["at"]["2x"]["on_target"]}
    # 16 dev rows give coarse speed-ups: the claim is checked exactly when both kinds reach about 2x on dev
    assert (claim is not None) == ({"past-future", "local"} <= on_target)
    if claim is None:
        assert "Claim not checked" in reports["sst2"]["table"]
    else:
        assert claim["past_future"] == "concat-future (entropy)" and claim["local"].startswith("local-weighted")
        assert claim["margin"] == pytest.approx(claim["past_future_test_quality"] - claim["local_test_quality"])
        assert "Paper's claim (Past-Future above" in reports["sst2"]["table"]
    assert (base / "report/curves.png").stat().st_size > 0

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("exitflow-past-future")
    runs = client.search_runs([exp.experiment_id])
    names = {r.info.run_name for r in runs}
    assert set(settings) <= names and "past-future-sst2" in names
    nested = next(r for r in runs if r.info.run_name == "concat-future")
    assert nested.data.params["future"] == "True" and nested.data.params["freeze_layers"] == "1"
    logged = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert nested.info.run_id in {m.source_run_id for m in logged}  # the model is logged with its run
    parent = next(r for r in runs if r.info.run_name == "past-future-sst2")
    if claim is not None:
        assert parent.data.metrics["claim_margin"] == pytest.approx(claim["margin"])
    from tests.flows.mlflow_schema import check_criterion_runs, check_experiment

    check_experiment(client, project, "exitflow-past-future")
    assert {r.data.params["method"] for r in check_criterion_runs(client, runs)} == {"past-future"}
    saved_local = json.loads((base / "models/local-weighted/train/checkpoint/exitflow.json").read_text())["exits"]
    assert (saved_local["head"], saved_local["pooling"], saved_local["scorer"]) == ("pooler", "mean", None)

    # the benchmark times the same models in one process, in the default run's benchmark row format
    from benchmarks.bench_past_future import main as bench

    out = bench(["--params", str(project / "params.yaml"), "--task", "sst2", "--settings", "concat-future",
                 "--speedups", "1.5", "--batch-sizes", "1", "4", "--repeats", "1", "--rows-bs1", "4", "--sweep-points", "10"])
    methods = {(r["method"], r["batch_size"]) for r in out["rows"]}
    assert methods == {(m, bs) for bs in (1, 4) for m in ("full", "concat-future/entropy@1.5x",
                                                           "local-weighted/entropy@1.5x", "local-weighted/patience@1.5x")}
    for r in out["rows"]:
        assert r["throughput"] > 0 and r["wallclock_speedup"] > 0 and r["flops_speedup"] > 0
    with pytest.raises(SystemExit):  # max was never trained: a clear usage error, not a traceback
        bench(["--params", str(project / "params.yaml"), "--task", "sst2", "--settings", "max"])


def test_bad_settings_fail_naming_the_key(project, prefect_harness, monkeypatch):
    from flows.past_future import past_future_pipeline
    from config.params import ConfigError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="past_future.strategies.*median"):
        past_future_pipeline(str(project / "params.yaml"), ["past_future.strategies=[median]"])
    with pytest.raises(ConfigError, match="past_future.gate"):
        past_future_pipeline(str(project / "params.yaml"), ["past_future.gate=mlp"])
    with pytest.raises(ValueError, match="freeze_layers .* is 3; expected 0..2 for this 3-layer backbone"):
        past_future_pipeline(str(project / "params.yaml"), [*TINY, "past_future.freeze_layers=3"])
    assert not (project / "artifacts/sst2/seed-42/past_future/models/concat/train/checkpoint").exists()
