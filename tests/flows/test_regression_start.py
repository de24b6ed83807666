"""Training wires the regression start: exits begin at the mean of the rows they train on (integration)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.flows.test_compare import make_similarity

pytestmark = pytest.mark.integration


def test_regression_exits_start_at_the_mean_of_the_training_labels(project):
    from config.params import load_params
    from tasks.backbones import load_checkpoint
    from tasks.data import prepare_task
    from tasks.features import encode_split
    from tasks.train import train_multi_exit

    make_similarity(project / "src")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["custom"] = {"sim": {"files": {s: f"sim/{s}.tsv" for s in ("train", "dev", "test")},
                                        "text_columns": ["s1", "s2"], "label_column": "score", "label_type": "float",
                                        "metric": "pearson_spearman"}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    # nothing moves at this rate, and a 32-row subsample shows that the mean is of the rows trained on
    params = load_params(project / "params.yaml", ["train.lr=1e-12", "train.task=sim", "train.subsample.train=32"])
    prepare_task("sim", params.data, project / "src", project / "data")
    trained = train_multi_exit.fn(train=params.train, backbone=params.backbone, strategy="joint",
                                  data_dir=project / "data", out_dir=project / "train", seed=1)
    model, tokenizer, _ = load_checkpoint(trained["checkpoint"])
    biases = [layer.bias.item() for layer in model.heads.output_layers()]
    trained_rows = encode_split(project / "data", "sim", "train", tokenizer, params.backbone.max_length, None,
                                params.train.subsample.train, 1)["labels"]
    all_rows = pd.read_parquet(project / "data" / "sim" / "train.parquet")["label"]
    assert trained["train_rows"] == len(trained_rows) == 32 < len(all_rows)
    assert biases == pytest.approx([float(np.mean(trained_rows))] * 3, abs=1e-6)
    assert abs(np.mean(trained_rows) - all_rows.mean()) > 1e-3  # the subsample's mean, not the split's
