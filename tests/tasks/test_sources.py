"""Hub loading (mocked ``datasets``), backbone resolution and CLI errors for user mistakes."""

import sys
import types

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tasks.backbones import BackboneError, resolve_backbone
from config.params import DataConfig
from tasks.data import prepare_task


class FakeSplit(dict):
    def __len__(self):
        return len(self["label"])

    def train_test_split(self, test_size, seed):
        n = int(len(self) * (1 - test_size))
        return {"train": FakeSplit({k: v[:n] for k, v in self.items()}),
                "test": FakeSplit({k: v[n:] for k, v in self.items()})}


class FakeDatasetDict(dict):
    def filter(self, fn):
        out = FakeDatasetDict()
        for name, split in self.items():
            keep = [i for i in range(len(split)) if fn({k: v[i] for k, v in split.items()})]
            out[name] = FakeSplit({k: [v[i] for i in keep] for k, v in split.items()})
        return out


def test_hub_task_maps_glue_splits(tmp_path, monkeypatch):
    calls = []

    def load_dataset(name, config):
        calls.append((name, config))
        train = FakeSplit({"sentence": [f"s{i}" for i in range(10)], "label": [i % 2 for i in range(10)], "idx": list(range(10))})
        val = FakeSplit({"sentence": ["v0", "v1", "v2"], "label": [1, -1, 0], "idx": [0, 1, 2]})
        return FakeDatasetDict(train=train, validation=val)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    meta = prepare_task("sst2", DataConfig(hub={"sst2": "glue/sst2"}), tmp_path / "none", tmp_path / "out")
    assert calls == [("glue", "sst2")]
    assert meta["rows"] == {"train": 9, "dev": 1, "test": 2}  # unlabelled (-1) row dropped
    assert pq.read_table(tmp_path / "out/sst2/test.parquet").to_pydict()["text_a"] == ["v0", "v2"]


def test_unknown_backbone_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="unknown backbone 'bert-huge'.*minilm-l6.*HF_HUB_OFFLINE"):
        resolve_backbone("bert-huge")


def test_cli_rejects_unknown_strategy_and_bad_override():
    from flows.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["train", "--strategy", "sideways"])
    assert result.exit_code == 2
    assert "unknown strategy 'sideways'; choose one of joint, weighted, two_stage, alternating, single" in result.output
    result = runner.invoke(app, ["report", "--set", "train.epochs=-1"])
    assert result.exit_code == 2 and "train.epochs" in result.output
    assert "Traceback" not in result.output
