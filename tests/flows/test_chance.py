"""A model at chance level is reported loudly: log, report and MLflow tag (integration)."""

import pytest

pytestmark = pytest.mark.integration


def test_untrained_model_is_flagged_at_chance_in_log_result_and_report(project, prefect_harness, capsys):
    from config.params import load_params
    from tasks.data import prepare_task
    from tasks.evaluate import evaluate_exits
    from tasks.reports.default_run import build_report
    from tasks.train import train_multi_exit

    params = load_params(project / "params.yaml", ["train.lr=1e-12"])  # nothing can be learned
    prepare_task("sst2", params.data, project / "src", project / "data")
    trained = train_multi_exit.fn(train=params.train, backbone=params.backbone, strategy="joint",
                                  data_dir=project / "data", out_dir=project / "train", seed=1)
    check = trained["dev_chance_check"]
    assert check["at_chance"]
    out = capsys.readouterr().out
    assert "at chance level on dev" in out and "train.lr (now 1e-12)" in out
    evaluated = evaluate_exits.fn(evaluate=params.evaluate, backbone=params.backbone, train=params.train,
                                  ckpt_dir=project / "train/checkpoint", data_dir=project / "data", out_dir=project / "eval")
    assert evaluated["summary"]["dev_chance_check"] == check  # the same model on the same rows
    report = build_report({"joint": project / "eval"}, params.evaluate.timing_batch_sizes, project / "report")
    assert report["table"].startswith("**WARNING: joint is at chance level on dev**")
