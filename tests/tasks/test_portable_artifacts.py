"""Artifact bytes and cache stamps do not depend on where a project lives or how a run went."""

import hashlib
from pathlib import Path

from tasks.backbones import load_backbone, save_backbone
from tasks.caching import inputs_key
from tasks.io import portable_path, write_result
from tests.flows.conftest import make_backbone


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_saved_backbone_ignores_offline_mode_and_the_tokenizers_last_call(tmp_path, monkeypatch):
    make_backbone(tmp_path / "src")
    model, tokenizer = load_backbone(str(tmp_path / "src"), "eager")
    save_backbone(model, tokenizer, tmp_path / "fresh")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # recorded as local_files_only by transformers
    model, tokenizer = load_backbone(str(tmp_path / "src"), "eager")
    tokenizer(["the movie was good"], truncation=True, max_length=4, padding="max_length")  # sets backend state
    save_backbone(model, tokenizer, tmp_path / "used")
    assert hashes(tmp_path / "fresh") == hashes(tmp_path / "used")
    assert tokenizer.backend_tokenizer.truncation["max_length"] == 4  # the caller's tokenizer is left alone
    reloaded = load_backbone(str(tmp_path / "used"), "eager")[1]
    assert reloaded("the movie was good")["input_ids"] == [2, 13, 11, 15, 5, 3]


def test_result_and_stamp_are_the_same_for_a_project_in_another_folder(tmp_path):
    keys, results = [], []
    for root in (tmp_path / "a", tmp_path / "x" / "y" / "b"):
        (root / "data").mkdir(parents=True)
        (root / "data" / "rows.txt").write_text("1\n")
        (root / "params.yaml").write_text("seed: 1\n")
        out = root / "artifacts" / "step"
        keys.append(inputs_key("step", {"out_dir": out, "data_dir": root / "data", "cache_dir": None, "seed": 1}))
        returned = write_result(out, {"data": root / "data", "nested": {"plot": out / "p.png"}, "n": 3})
        assert returned["data"] == str(root / "data")  # flows get usable absolute paths back
        results.append((out / "result.json").read_text())
    assert keys[0] == keys[1]
    assert results[0] == results[1] and '"plot": "artifacts/step/p.png"' in results[0]
    assert portable_path(tmp_path / "shared" / "conll", tmp_path / "a" / "artifacts") == "../shared/conll"
    assert portable_path(tmp_path / "elsewhere", tmp_path) == (tmp_path / "elsewhere").as_posix()  # no project


def test_a_changed_input_still_changes_the_stamp(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.txt").write_text("1\n")
    args = {"out_dir": tmp_path / "artifacts" / "step", "data_dir": tmp_path / "data", "seed": 1}
    before = inputs_key("step", args)
    (tmp_path / "data" / "rows.txt").write_text("2\n")
    assert inputs_key("step", args) != before
    assert inputs_key("step", {**args, "data_dir": tmp_path / "other"}) != inputs_key("step", args)
