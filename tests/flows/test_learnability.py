"""The learnability study end to end on tiny data, the annotation bits, and the test-part guard."""

import json
import random

import pytest
import torch

pytestmark = pytest.mark.integration

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot", "the", "a", "was", "very"]


def make_difficulty(root, seed=0):
    rng = random.Random(seed)
    for name, width, n in (("snli_model", 4, (60, 30)), ("snli_human", 1, (40, 20))):
        for split, rows in zip(("train", "test"), n):
            lines = ["sentence1\tsentence2\tlabel"]
            for _ in range(rows):
                bits = [int(rng.random() < 0.3 + 0.15 * k) for k in range(width)]
                label = json.dumps(bits) if width > 1 else str(bits[0])
                lines.append(f"the {rng.choice(WORDS[6:8])} was {rng.choice(WORDS[:6])}\ta {rng.choice(WORDS[:6])} plot\t{label}")
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f"{split}.tsv").write_text("\n".join(lines) + "\n")


def make_conll(root, seed=0):
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for split, n in (("train", 40), ("dev", 40)):
        sentences = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
            tags = ["B-X" if w in WORDS[:3] else "O" for w in words]
            sentences.append("\n".join(f"{w} NN {t}" for w, t in zip(words, tags)))
        (root / f"{split}.txt").write_text("-DOCSTART- -X- O\n\n" + "\n\n".join(sentences) + "\n")


@pytest.fixture()
def study(project):
    make_difficulty(project / "difficulty")
    make_conll(project / "conll")
    return project, ["learnability.difficulty_dir=difficulty", "learnability.conll_dir=conll",
                     "learnability.linear_epochs=2", "learnability.bilstm_epochs=2", "learnability.bert_epochs=1",
                     "learnability.human_epochs=2", "learnability.token_epochs=1", "learnability.token_train_sentences=30"]


def test_learnability_flow_runs_every_study_and_logs_one_run_per_predictor(study, prefect_harness, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.learnability import learnability

    project, overrides = study
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = learnability(str(project / "params.yaml"), overrides)
    results = out["results"]
    assert list(results) == ["snli_model", "sst2", "conll2003"]
    assert list(results["snli_model"]) == ["majority", "linear_m", "bilstm", "bert"]  # no annotator: no Linear-B
    assert list(results["sst2"]) == ["majority", "linear_m", "linear_b", "bilstm", "bert"]
    assert list(results["conll2003"]) == ["majority", "linear_b", "bilstm", "bert"]  # Linear-M: sentence level only

    # Majority equals the per-layer prior of predictor-train, scored on predictor-test
    rows = [json.loads(line) for line in (project / "artifacts/learnability/seed-42/datasets/snli_model/difficulty.jsonl").read_text().splitlines()]
    train = torch.tensor([r["labels"] for r in rows if r["part"] == "train"]).float()
    assert results["snli_model"]["majority"]["prior"] == (train.mean(0) >= 0.5).long().tolist()
    assert sum(r["part"] == "test" for r in rows) == 30  # the published test file is the test part
    assert len(out["human"]["history"]) == 2

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("learnability").experiment_id])
    names = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert len(names) == 4 + 5 + 4 + 1 and "human/BERT" in names and "conll2003/Linear-B" in names
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} == {"report/f1.png", "report/results.md"}
    assert (project / "artifacts/sst2/seed-42/learnability/report/results.md").read_text().count("| conll2003 |") == 4
    # the schema: described, with provenance and identity; no prepared split is claimed as their data
    from tests.flows.mlflow_schema import check_experiment

    check_experiment(client, project, "learnability", task=None)


def test_sentence_annotation_bits_are_per_layer_argmax_equals_gold(project, prefect_harness):
    from models.exiting import MultiExitConfig, MultiExitModel
    from tasks.backbones import load_backbone, save_checkpoint
    from config.params import load_params
    from tasks.data import load_columns, prepare_task
    from tasks.difficulty import build_sentence_difficulty, load_difficulty

    params = load_params(project / "params.yaml")
    prepare_task("sst2", params.data, project / "src", project / "data")
    backbone, tokenizer = load_backbone(params.backbone.name, "eager")
    torch.manual_seed(0)
    model = MultiExitModel(backbone, MultiExitConfig(num_outputs=2, head_dropout=0.0)).eval()
    save_checkpoint(model, tokenizer, project / "annotator", {"task": "sst2", "metric": "accuracy", "strategy": "joint"})
    build_sentence_difficulty.fn(annotator_dir=project / "annotator", backbone=params.backbone, data_dir=project / "data",
                                 out_dir=project / "ds", fractions=(0.5, 0.25, 0.25), seed=0)
    rows = load_difficulty(project / "ds")
    cols = load_columns(project / "data", "sst2", "dev")
    for row, text, label in zip(rows, cols["text_a"], cols["label"]):  # one row at a time: no padding involved
        ids = tokenizer(text, return_tensors="pt")
        logits = model(ids["input_ids"], ids["attention_mask"]).logits[:, 0]  # [L, c]
        assert row["labels"] == (logits.argmax(-1) == label).long().tolist()
    assert sorted(r["part"] for r in rows).count("train") == 8


def test_selection_reads_only_dev_and_the_test_part_once_afterwards(study, monkeypatch):
    import tasks.learnability as tl
    from config.params import load_params
    from tasks.difficulty import load_published_difficulty

    project, overrides = study
    params = load_params(project / "params.yaml", overrides)
    load_published_difficulty.fn(source=project / "difficulty/snli_model", out_dir=project / "ds", dev_fraction=0.2, seed=0)
    events = []
    import models.learnability as ml

    original_open, original_predict = tl.DifficultyParts.open_test, ml.predict_bits
    spy = lambda *a, **k: (events.append("predict"), original_predict(*a, **k))[1]  # noqa: E731
    monkeypatch.setattr(tl.DifficultyParts, "open_test", lambda self: (events.append("open_test"), original_open(self))[1])
    monkeypatch.setattr(ml, "predict_bits", spy)  # dev predictions inside fit_predictor
    monkeypatch.setattr(tl, "predict_bits", spy)  # the test prediction in the task
    result = tl.train_difficulty_predictor.fn("bilstm", params.learnability, params.backbone, project / "ds", project / "out")
    assert events == ["predict", "predict", "open_test", "predict"]  # 2 dev epochs, then the test part once
    assert result["selected_epoch"] in (1, 2)
