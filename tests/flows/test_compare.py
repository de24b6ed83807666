"""exitflow compare on a tiny grid: cells, lr choice, n/a and failed cells, static baselines,
MLflow runs and champions, Dask vs sequential, fast failures on dead services."""

import json
import random
import shutil
import socket
import time

import mlflow
import pytest
import yaml

from tests.flows.conftest import WORDS

pytestmark = pytest.mark.integration


def make_similarity(src, seed: int = 1) -> None:
    """A tiny STS-B-like regression task: the score is 5 when both sentences share the word."""
    rng = random.Random(seed)
    for split, n in (("train", 48), ("dev", 16), ("test", 16)):
        lines = ["s1\ts2\tscore"]
        for _ in range(n):
            a, b = rng.choice(WORDS[:6]), rng.choice(WORDS[:6])
            lines.append(f"the movie was {a}\tthe plot was {b}\t{5.0 if a == b else 1.0 + rng.random()}")
        (src / "sim").mkdir(parents=True, exist_ok=True)
        (src / "sim" / f"{split}.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture()
def compare_project(project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri exports it
    make_similarity(project / "src")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["custom"] = {"sim": {"files": {s: f"sim/{s}.tsv" for s in ("train", "dev", "test")},
                                        "text_columns": ["s1", "s2"], "label_column": "score", "label_type": "float",
                                        "metric": "pearson_spearman"}}
    params["evaluate"]["timing_batch_sizes"] = [4]
    params["leco"] = {"search_epochs": 1, "inner_size": 8,
                      "search_space": {"activation_1": ["relu"], "encoder_1": ["conv_1", "skip"], "encoder_2": ["null"],
                                       "pooling": ["avg"], "activation_2": ["gelu"]}}
    params["compare"] = {"tasks": ["sst2"], "methods": ["joint", "hashee", "leco"], "seeds": [0], "lr_grid": [1e-3, 5e-3],
                         "static_layers": [1, 2], "timing_batch_size": 4, "sequential": True, "torch_threads": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return project


def run_compare(project, *overrides):
    from flows.compare import compare_flow

    return compare_flow(str(project / "params.yaml"), list(overrides))


def comparable(cells):
    """Cells without what differs between runs by nature: wall-clock, seconds, absolute paths."""
    out = []
    for c in sorted(cells, key=lambda c: (c["task"], c["method"], c["seed"])):
        c = {k: v for k, v in c.items() if k not in ("seconds", "checkpoint", "timed")}
        c["timed"] = None
        out.append(c)
    return out


def test_compare_grid_report_mlflow_and_champions(compare_project, prefect_harness):
    from tests.flows.mlflow_schema import check_experiment, check_versions

    result = run_compare(compare_project)
    cells = {(c["task"], c["method"]): c for c in result["cells"]}
    # every task x method x static cell is there; the custom regression task joined the grid
    assert set(cells) == {(t, m) for t in ("sst2", "sim") for m in ("joint", "hashee", "leco", "static-1", "static-2")}
    # LECO's COBEE needs classes: n/a on the regression task, with the reason, not dropped
    assert cells[("sim", "leco")]["status"] == "n/a" and "regression" in cells[("sim", "leco")]["error"]
    assert cells[("sst2", "leco")]["status"] == "ok"
    for (task, method), c in cells.items():
        if c["status"] != "ok":
            continue
        # the chosen learning rate is the one with the best dev quality at full depth
        scores = {float(lr): s for lr, s in c["lr_scores"].items()}
        assert set(scores) == {1e-3, 5e-3}
        assert c["lr"] == max(scores, key=lambda lr: (scores[lr], -lr))
        assert c["dev_score"] == scores[c["lr"]] == c["full"]["dev"]
        # every evaluation kept its per-row test predictions, one vector per sweep point, for the intervals
        from tasks.row_predictions import read_test_rows

        labels, rows = read_test_rows(c["test_rows"])
        assert len(rows) >= sum(len(points) for points in c["series"].values()) and all(len(r) == len(labels) for r in rows.values())
    # static baselines: the first k of 3 layers, layer speed-up 3/k, FLOPs speed-up above 1 for k < 3
    for k in (1, 2):
        point = cells[("sst2", f"static-{k}")]["series"]["static"][0]["test"]
        assert point["layer_speedup"] == pytest.approx(3 / k)
        assert point["flops_speedup"] > 1.0
    flops = [cells[("sst2", f"static-{k}")]["series"]["static"][0]["test"]["flops_speedup"] for k in (1, 2)]
    assert flops[0] > flops[1]  # one layer costs less than two
    # each learning rate trained its own model, in its own folder
    root = compare_project / "artifacts" / "compare" / "default"
    assert (root / "cells" / "lr-0.001" / "sst2" / "seed-0" / "train" / "joint" / "checkpoint").is_dir()
    assert (root / "cells" / "lr-0.005" / "sst2" / "seed-0" / "train" / "joint" / "checkpoint").is_dir()
    # report: markdown with the n/a row, JSON, one Pareto plot per task
    report = root / "report"
    assert "n/a" in (report / "compare.md").read_text()
    assert "(1 seed)" in (report / "compare.md").read_text()  # claims carry their interval and seed count
    assert {"sst2", "sim"} <= set(json.loads((report / "compare.json").read_text())["tasks"])
    assert (report / "pareto-sst2.png").stat().st_size > 0 and (report / "pareto-sim.png").stat().st_size > 0

    # MLflow: one parent run, a nested run per cell, a champion per (task, method) that ran
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("exitflow-compare")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
              and not r.info.run_name.startswith("champion/")]
    assert len(nested) == len(result["cells"])
    for task, method in (("sst2", "joint"), ("sst2", "hashee"), ("sst2", "leco"), ("sim", "joint"), ("sim", "hashee")):
        version = client.get_model_version_by_alias(f"exitflow-default-{task}-{method}", "champion")
        assert float(version.tags["dev_score"]) == pytest.approx(cells[(task, method)]["dev_score"])
        check_versions(client, f"exitflow-default-{task}-{method}", "champion")
    # the schema: provenance, identity and datasets on every run; ok cells read at the target speed-ups
    check_experiment(client, compare_project, "exitflow-compare")
    ok = [r for r in nested if r.data.params["status"] == "ok"]
    assert ok and all("full_depth_dev_quality" in r.data.metrics for r in ok)
    assert all("test_quality_at_1.5x" in r.data.metrics for r in ok if r.data.params["method"] in ("joint", "static-1"))

    # a re-run with nothing changed is served from the cache and does not move any champion
    before = (root / "cells" / "lr-0.001" / "sst2" / "seed-0" / "train" / "joint" / "result.json").stat().st_mtime_ns
    again = run_compare(compare_project)
    assert comparable(again["cells"]) == comparable(result["cells"])
    assert (root / "cells" / "lr-0.001" / "sst2" / "seed-0" / "train" / "joint" / "result.json").stat().st_mtime_ns == before
    assert not any(ch["moved"] for ch in again["champions"])


def test_champion_moves_only_when_dev_improves(compare_project, prefect_harness):
    from dataclasses import replace

    from flows.champions import update_champion
    from config.params import load_params
    from tasks.reports.cells import ComparisonCell

    # a budget large enough for the grid: the budgeted path (units one slot at a time) runs it all
    result = run_compare(compare_project, "compare.methods=[joint]", "compare.static_layers=[]", "compare.lr_grid=[0.001]",
                         "compare.tasks=[sst2]", "data.custom={}", "compare.budget=1h")
    assert all(c["status"] == "ok" for c in result["cells"]) and "INCOMPLETE" not in result["table"]
    cell = ComparisonCell.from_json(next(c for c in result["cells"] if c["method"] == "joint"))
    params = load_params(compare_project / "params.yaml")
    first = mlflow.MlflowClient().get_model_version_by_alias("exitflow-default-sst2-joint", "champion")
    worse = update_champion(params, "default", replace(cell, dev_score=cell.dev_score - 10))
    assert not worse["moved"] and worse["version"] == first.version
    with mlflow.start_run(run_name="challenger"):
        better = update_champion(params, "default", replace(cell, dev_score=cell.dev_score + 10))
    assert better["moved"] and better["version"] != first.version
    client_alias = mlflow.MlflowClient().get_model_version_by_alias("exitflow-default-sst2-joint", "champion")
    assert client_alias.version == better["version"]


def broken_cell(ctx, variant):
    """A registered comparison cell that always fails."""
    raise ValueError(f"cannot handle {ctx.params.train.task}")


def test_failing_cell_is_reported_and_the_grid_goes_on(compare_project, prefect_harness):
    from flows.registry import METHODS, Method, register

    register(Method(name="broken", summary="raises", flows_module=__name__, cell="broken_cell"))
    try:
        result = run_compare(compare_project, "compare.methods=[joint, broken]", "compare.static_layers=[]",
                             "compare.lr_grid=[0.001]")
    finally:
        METHODS.pop("broken")
    cells = {(c["task"], c["method"]): c for c in result["cells"]}
    table = (compare_project / "artifacts" / "compare" / "default" / "report" / "compare.md").read_text()
    for task in ("sst2", "sim"):
        assert cells[(task, "broken")]["status"] == "failed"
        assert cells[(task, "broken")]["error"] == f"ValueError: cannot handle {task}"
        assert cells[(task, "joint")]["status"] == "ok"
        assert f"ValueError: cannot handle {task}" in table


def test_dask_local_cluster_equals_sequential(compare_project, prefect_harness, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # the workers' Prefect API (the CLI does this)
    grid = ["compare.methods=[joint, hashee]", "compare.static_layers=[1]"]
    sequential = run_compare(compare_project, *grid)
    shutil.rmtree(compare_project / "artifacts")
    dask = run_compare(compare_project, *grid, "compare.sequential=false", "compare.workers=2")
    assert "LocalCluster, 2 workers" in dask["timing"]["runner"]
    assert comparable(dask["cells"]) == comparable(sequential["cells"])


@pytest.fixture()
def silent_port():
    """A port that accepts connections and never answers (a hung or foreign service)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_dead_services_fail_fast_naming_them(silent_port):
    from flows.compare import check_dask_address  # flows.cli imports it from flows.compare
    from flows.compare_grid import CONNECT_TIMEOUT_S
    from flows.tracking import check_tracking_server
    from config.params import ConfigError

    for address in (f"tcp://127.0.0.1:{silent_port}", "tcp://127.0.0.1:9"):  # silent; refused
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=address):
            check_dask_address(address)
        assert time.perf_counter() - start < CONNECT_TIMEOUT_S + 3
    for uri in (f"http://127.0.0.1:{silent_port}", "http://127.0.0.1:9"):
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=uri):
            check_tracking_server(uri, timeout_s=2)
        assert time.perf_counter() - start < 5


def test_lr_is_chosen_per_task_and_method_on_the_first_seed():
    from flows.compare_grid import assemble_cells
    from tasks.reports.cells import CellSummary, UnitResult

    def unit(dev, test):
        return UnitResult(CellSummary("accuracy", 6, dev, test, {}, {}, "ckpt"), None, 1.0)

    failed = UnitResult(None, "ValueError: boom", 0.0)

    # seed 1 (the first) tries both rates and prefers 0.2 on dev (test would prefer 0.1); seed 2 trains at 0.2 only
    grid = [{"task": "t", "method": "m", "seed": 1, "lr": lr} for lr in (0.1, 0.2)] + [{"task": "t", "method": "m",
                                                                                       "seed": 2, "lr": 0.2}]
    cells = {c.seed: c for c in assemble_cells(grid, [unit(70, 99), unit(80, 50), unit(60, 0)], [1, 2])}
    assert cells[1].lr == cells[2].lr == 0.2 and (cells[1].dev_score, cells[2].dev_score) == (80, 60)
    assert set(cells[1].lr_scores) == {"0.1", "0.2"} and set(cells[2].lr_scores) == {"0.2"}
    # a rate that failed loses to one that trained
    cells = {c.seed: c for c in assemble_cells(grid[:2], [unit(70, 0), failed], [1])}
    assert cells[1].lr == 0.1 and cells[1].status == "ok"
    # the second seed failed at the chosen rate: its cell fails with the unit's error, the first is ok
    cells = {c.seed: c for c in assemble_cells(grid, [unit(70, 0), unit(80, 0), failed], [1, 2])}
    assert cells[2].status == "failed" and cells[2].error == "ValueError: boom" and cells[1].status == "ok"
    # no rate trained on the first seed: every seed fails with its errors
    cells = {c.seed: c for c in assemble_cells(grid[:2], [failed, failed], [1, 2])}
    assert cells[1].status == cells[2].status == "failed" and cells[2].error == "ValueError: boom"
    # a first-seed unit not started (None): no rate yet, every seed pending; a later unit not started: pending
    cells = {c.seed: c for c in assemble_cells(grid[:2], [unit(70, 0), None], [1, 2])}
    assert cells[1].status == cells[2].status == "pending"
    cells = {c.seed: c for c in assemble_cells(grid, [unit(70, 0), unit(80, 0), None], [1, 2])}
    assert cells[1].status == "ok" and cells[2].status == "pending" and cells[2].lr == 0.2
