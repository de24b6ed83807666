"""A resumed run says what it resumed: strategy, stage and epoch; for ConsistentEE, the round."""

import json
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import yaml

from tests.flows.conftest import make_backbone, make_sst2

pytestmark = pytest.mark.integration


@pytest.fixture()
def tiny(tmp_path):
    make_backbone(tmp_path / "backbone")
    make_sst2(tmp_path / "src")
    params = {"data": {"source_dir": "src", "tasks": ["sst2"]},
              "backbone": {"name": str(tmp_path / "backbone"), "attn_implementation": "eager", "max_length": 16},
              "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_resumed_training_says_where_it_continues(tiny, monkeypatch, capsys):
    import models.training as training
    from config.params import load_params
    from tasks.data import prepare_task
    from tasks.train import train_multi_exit

    params = load_params(tiny / "params.yaml")
    prepare_task("sst2", params.data, tiny / "src", tiny / "data")
    kw = dict(train=params.train, backbone=params.backbone, strategy="joint", data_dir=tiny / "data",
              out_dir=tiny / "out", seed=1)
    original, calls = training.train_epoch, []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr("models.fitting.train_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_multi_exit.fn(**kw)
    assert "resuming" not in capsys.readouterr().out  # a fresh start says nothing about resuming

    monkeypatch.setattr("models.fitting.train_epoch", original)
    train_multi_exit.fn(**kw)
    out = capsys.readouterr().out
    line = next((l for l in out.splitlines() if "resuming" in l), None)
    assert line is not None, out
    assert line.startswith("[joint] resuming sst2 training") and str(tiny / "out" / "_resume") in line
    assert "stage 1 epoch 1/2 finished earlier, continuing at stage 1 epoch 2" in line


def test_consistentee_says_which_round_it_resumes_after(tiny, monkeypatch, capsys):
    """Round 1 finished before the kill (its result.json is there); round 2 did not."""
    import flows.consistentee as cee
    from flows.context import RunContext
    from flows.layout import Layout
    from config.params import load_params

    params = load_params(tiny / "params.yaml", ["consistentee.rounds=3", "consistentee.early_stop=false"])
    dirs = Layout.from_params(params).consistentee("default")
    dirs.train(1).mkdir(parents=True)
    (dirs.train(1) / "result.json").write_text("{}")
    plot = tiny / "histogram.png"
    plot.write_bytes(b"")

    def fake_run_cached(task, out_dir, **kwargs):  # the steps themselves are tested elsewhere
        if task is cee.compute_memorized_layer:
            return {"plot": str(plot), "histogram": [1, 2], "mean": 1.5}
        return {"dev": {"quality": 50.0, "layer_speedup": 1.5, "objective": 0.1}}

    @contextmanager
    def start_run(**_):
        yield SimpleNamespace(info=SimpleNamespace(run_id="r"))

    fake_mlflow = SimpleNamespace(start_run=start_run, log_params=lambda *a, **k: None, log_artifact=lambda *a, **k: None,
                                  log_metric=lambda *a, **k: None, active_run=lambda: SimpleNamespace(info=SimpleNamespace(run_id="r")))
    monkeypatch.setattr(cee, "run_cached", fake_run_cached)
    monkeypatch.setattr(cee, "mlflow", fake_mlflow)
    monkeypatch.setattr(cee, "active_logger", lambda: None)
    monkeypatch.setattr(cee, "train_exit_model", lambda *a, **k: {})  # the init step
    ctx = RunContext.from_params(params)

    cee.train_rounds(ctx, params.consistentee, "default", 3)
    out = capsys.readouterr().out
    assert "[consistentee default] resuming after round 1: round 1 finished earlier" in out, out
    assert out.index("resuming after round 1") < out.index("round 1: dev quality")

    for r in (2, 3):
        dirs.train(r).mkdir(parents=True)
        (dirs.train(r) / "result.json").write_text(json.dumps({}))
    (dirs.train(2) / "result.json").unlink()  # only the finished prefix counts
    cee.train_rounds(ctx, params.consistentee, "default", 3)
    assert "resuming after round 1: round 1 finished" in capsys.readouterr().out
