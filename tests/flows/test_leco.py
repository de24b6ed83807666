"""LECO end to end on the tiny backbone: search -> derive -> retrain -> compare, MLflow, bad input."""

import json

import pytest

pytestmark = pytest.mark.integration

TINY = ["leco.tasks=[sst2]", "leco.baselines=[jt-linear,jt-mha]", "leco.inner_size=8", "leco.search_epochs=2",
        "leco.speedups=[1.5,2.0]", "train.epochs=1"]


def test_search_derive_retrain_and_compare(project, prefect_harness, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.leco import leco_pipeline
    from models.leco import derive_architecture
    from tasks.leco import check_checkpoint_architecture

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = leco_pipeline(str(project / "params.yaml"), TINY)
    base = project / "artifacts/sst2/seed-42/leco"

    searched = json.loads((base / "search/architecture_weights.json").read_text())
    assert len(searched["epochs"]) == 2 and len(searched["epochs"][0]) == 3  # per epoch, per layer
    assert searched["epochs"][0] != searched["epochs"][1]  # the architecture moved during the search
    derived = json.loads((base / "derive/architecture.json").read_text())["layers"]
    assert derived == derive_architecture(searched["epochs"][-1])
    assert (base / "search/architecture_weights.png").stat().st_size > 0
    assert "| layer | activation 1 |" in (base / "derive/architecture.md").read_text()

    saved = json.loads((base / "model/train/checkpoint/exitflow.json").read_text())["exits"]
    assert saved["head"] == "leco" and saved["head_options"] == {"architecture": derived, "inner_size": 8}
    metrics = json.loads((base / "model/evaluate/metrics.json").read_text())
    assert set(metrics["real_vs_simulated_mismatches"]) == {"cobee", "entropy", "patience", "lte"}
    assert set(metrics["real_vs_simulated_mismatches"].values()) == {0}
    curves = json.loads((base / "model/evaluate/curves.json").read_text())
    assert len(curves["cobee"]) >= 5

    comparison = json.loads((base / "report/comparison.json").read_text())
    assert [r["method"] for r in comparison["training"]] == ["leco", "jt-linear", "jt-mha"]
    for row in comparison["training"]:  # AVG / BEST recomputed from each model's layer-wise test scores
        folder = base / ("model" if row["method"] == "leco" else f"baselines/{row['method']}") / "evaluate"
        test = json.loads((folder / "metrics.json").read_text())["layerwise"]["test"]
        assert row["test_avg"] == pytest.approx(sum(test) / len(test)) and row["test_best"] == max(test)
    claim = comparison["training_claim"]
    assert claim["margin"] == pytest.approx(claim["leco_avg"] - max(r["test_avg"] for r in comparison["training"][1:]))
    methods = {r["method"] for r in comparison["exiting_rows"]}
    assert methods == {"leco (cobee)", "leco (entropy)", "leco (patience)", "leco (lte)", "jt-linear (patience)"}
    assert [c["at"] for c in comparison["exiting_claim"]] == ["1.5x", "2x"]
    assert "Paper's claim (LECO's AVG above every other method's)" in results["sst2"]["report"]["table"]

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("exitflow-leco")
    runs = client.search_runs([exp.experiment_id])
    assert {"leco-sst2", "search", "leco", "jt-linear", "jt-mha"} <= {r.info.run_name for r in runs}
    from tests.flows.mlflow_schema import check_criterion_runs, check_experiment

    check_experiment(client, project, "exitflow-leco")
    assert {"leco", "jt-linear"} <= {r.data.params["method"] for r in check_criterion_runs(client, runs)}
    search_run = next(r for r in runs if r.info.run_name == "search")
    weight = client.get_metric_history(search_run.info.run_id, "alpha_layer_1_pooling_sa")
    assert [m.step for m in weight] == [1, 2]
    assert weight[-1].value == pytest.approx(searched["epochs"][-1][0]["pooling"]["sa"])
    assert {a.path for a in client.list_artifacts(search_run.info.run_id, "leco")} >= {
        "leco/architecture.json", "leco/architecture_weights.png", "leco/architecture.md"}

    # the benchmark times the LECO and JT + linear models in one process, in the default run's benchmark row format
    from benchmarks.bench_leco import main as bench

    out = bench(["--params", str(project / "params.yaml"), "--task", "sst2", "--speedups", "1.5", "--batch-sizes", "1", "4",
                 "--repeats", "1", "--rows-bs1", "4", "--sweep-points", "10"])
    assert {(r["method"], r["batch_size"]) for r in out["rows"]} == {
        (m, bs) for bs in (1, 4) for m in ("full", "leco/cobee@1.5x", "leco/entropy@1.5x", "leco/patience@1.5x",
                                           "leco/lte@1.5x", "jt-linear/patience@1.5x")}
    for r in out["rows"]:
        assert r["throughput"] > 0 and r["wallclock_speedup"] > 0 and r["flops_speedup"] > 0

    # a checkpoint whose exits differ from the architecture file is refused, naming both
    other = [dict(cell) for cell in derived]
    other[1]["pooling"] = next(op for op in ("cls", "avg", "max", "sa") if op != derived[1]["pooling"])
    edited = project / "edited.json"
    edited.write_text(json.dumps({"layers": other}))
    with pytest.raises(ValueError, match=r"exitflow.json: layer 2 pooling is .* but .*edited.json says"):
        check_checkpoint_architecture(base / "model/train/checkpoint", edited)
    # a derived file naming an unknown op, or with the wrong number of layers, names the file (with the
    # cache's output check off: by default an edited architecture.json is rebuilt by the derive step)
    from flows.leco import leco_pipeline as again

    monkeypatch.setenv("EXITFLOW_VERIFY", "off")
    architecture = base / "derive/architecture.json"
    stored = json.loads(architecture.read_text())
    architecture.write_text(json.dumps({**stored, "layers": [{**derived[0], "encoder_1": "conv_9"}, *derived[1:]]}))
    with pytest.raises(ValueError, match=r"architecture.json, layer 1: encoder_1 = 'conv_9'"):
        again(str(project / "params.yaml"), TINY, until="train")
    architecture.write_text(json.dumps({**stored, "layers": derived[:2]}))
    with pytest.raises(ValueError, match=r"architecture.json: expected one cell per layer \(3 layers\), got 2"):
        again(str(project / "params.yaml"), TINY, until="train")


def test_bad_leco_settings_name_the_key(tmp_path):
    from config.params import ConfigError, load_params

    (tmp_path / "params.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"leco.search_space: .*encoder_1 = \['conv_2'\]"):
        load_params(tmp_path / "params.yaml", ["leco.search_space.encoder_1=[conv_2]"])
    with pytest.raises(ConfigError, match=r"leco: .*inner_size \(d_e\) 12 does not divide by the head count\(s\) \[8\]"):
        load_params(tmp_path / "params.yaml", ["leco.inner_size=12"])
    with pytest.raises(ConfigError, match=r"leco.baselines: .*unknown baseline \['bert'\]"):
        load_params(tmp_path / "params.yaml", ["leco.baselines=[bert]"])
    with pytest.raises(ConfigError, match=r"leco.search_space: .*unknown key\(s\) 'encoder_3'"):
        load_params(tmp_path / "params.yaml", ["leco.search_space.encoder_3=[conv_1]"])
    params = load_params(tmp_path / "params.yaml", ["leco.search_space.encoder_1=[conv_1, null]"])
    assert params.leco.search_space["encoder_1"] == ["conv_1", "null"]  # YAML's bare null is the null op
    assert params.leco.search_space["pooling"] == ["cls", "avg", "max", "sa"]  # choices left out keep every op
