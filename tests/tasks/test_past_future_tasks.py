"""Past-Future checkpoints: a checkpoint of another setting is refused."""

import json

import pytest

from tasks.past_future import check_setting


def save(tmp_path, exits, strategy="weighted"):
    (tmp_path / "exitflow.json").write_text(json.dumps({"exits": exits, "strategy": strategy}))
    return tmp_path


def test_a_checkpoint_of_another_setting_is_refused_naming_the_file(tmp_path):
    ckpt = save(tmp_path, {"head": "past_future", "head_options": {"past": "avg", "future": False, "gate": "scalar"}})
    check_setting(ckpt, "avg")
    with pytest.raises(ValueError, match=r"exitflow.json: this checkpoint was trained as 'avg' .* not as 'concat-future'"):
        check_setting(ckpt, "concat-future")
    local = save(tmp_path, {"head": "linear", "head_options": {}}, strategy="joint")
    with pytest.raises(ValueError, match="trained as 'local-joint'"):
        check_setting(local, "local-weighted")
    with pytest.raises(FileNotFoundError, match="no exitflow checkpoint for setting 'lstm'"):
        check_setting(tmp_path / "missing", "lstm")
