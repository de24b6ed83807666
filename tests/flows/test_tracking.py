"""What the registered MLflow model ships with is chosen on dev, never on test."""

from flows.tracking import shipped_criterion


def test_shipped_criterion_is_the_fastest_on_dev_not_on_test():
    points = {
        "entropy": {"threshold": 0.3, "dev": {"layer_speedup": 2.0, "quality": 80.0}, "test": {"layer_speedup": 3.0}},
        "patience": {"threshold": 2.0, "dev": {"layer_speedup": 2.5, "quality": 79.0}, "test": {"layer_speedup": 1.5}},
    }
    assert shipped_criterion(points) == {"criterion": "patience", "threshold": 2.0}
    assert shipped_criterion({}) == {}


class FakeRegistry:
    """The registry calls ``flows.champions.challenge`` makes, on one model."""

    def __init__(self):
        self.aliases, self.dev_scores = {}, {}

    def get_model_version_by_alias(self, name, alias):
        from types import SimpleNamespace

        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        if alias not in self.aliases:
            raise MlflowException("no alias", error_code=INVALID_PARAMETER_VALUE)
        version = self.aliases[alias]
        return SimpleNamespace(version=version, tags={"dev_score": str(self.dev_scores[version])})

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[alias] = version


def test_recommended_alias_moves_only_to_a_strictly_better_dev_score():
    from flows.champions import challenge

    registry = FakeRegistry()
    for version, dev_score, moves in (("1", 80.0, True), ("2", 80.0, False), ("3", 79.0, False), ("4", 81.0, True)):
        registry.dev_scores[version] = dev_score
        assert challenge(registry, "m", "recommended", version, dev_score) is moves
    assert registry.aliases == {"recommended": "4"}


def test_entry_point_names_no_machine_path(monkeypatch):
    from flows.tracking import REPO_ROOT, entry_point

    monkeypatch.setattr("sys.argv", [str(REPO_ROOT / "flows" / "cli.py")])
    assert entry_point() == "flows/cli.py"
    monkeypatch.setattr("sys.argv", ["/opt/venv/bin/exitflow"])
    assert entry_point() == "bin/exitflow"


def test_dvc_folder_md5_is_the_hash_dvc_records_for_a_folder(tmp_path):
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    from flows.tracking import dvc_folder_md5

    folder = tmp_path / "dataset"
    (folder / "sub").mkdir(parents=True)
    (folder / "difficulty.jsonl").write_text('{"labels": [1, 0]}\n')
    (folder / "sub" / "crlf.txt").write_bytes(b"a\r\nb")  # DVC 3 hashes the bytes as they are
    (folder / ".inputs-key").write_text("key")  # hidden files are part of the output
    fs = LocalFileSystem()
    _, _, tree = build(HashFileDB(fs, str(tmp_path / "odb")), str(folder), fs, "md5")
    assert dvc_folder_md5(folder) == tree.hash_info.value
    (folder / "held.exitflow-lock").write_text("")  # .dvcignore'd: not part of the hash
    assert dvc_folder_md5(folder) == tree.hash_info.value
