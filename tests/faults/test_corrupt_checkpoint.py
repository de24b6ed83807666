"""A damaged or truncated checkpoint, weights or architecture file: a ``CheckpointError`` that names
the file and says what to do (exit 2); a damaged output of a finished step is rebuilt on re-run."""

import io

import pytest
import torch
from transformers import BertTokenizer

from models.errors import CheckpointError
from models.exiting import MultiExitConfig, MultiExitModel
from tasks.backbones import load_checkpoint, save_checkpoint
from tasks.checkpoint_files import read_torch
from tests.conftest import tiny_backbone
from tests.faults.conftest import (
    TRAIN,
    error_lines,
    exitflow_process,
    folder_hashes,
    prepare,
)

pytestmark = pytest.mark.timeout(300)  # a hung command fails, not the suite

FILES = ["exits.safetensors", "exitflow.json", "backbone/config.json", "backbone/model.safetensors",
         "backbone/tokenizer.json", "backbone/tokenizer_config.json"]


def damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"\x00garbage\x01" * 8 if how == "garbage" else data[: len(data) // 2])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = MultiExitModel(tiny_backbone("bert", 2), MultiExitConfig(num_outputs=2, head_dropout=0.0))
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])})
    return save_checkpoint(model.eval(), tokenizer, tmp_path_factory.mktemp("ckpt") / "checkpoint", {"task": "t"})


@pytest.mark.parametrize("how", ["garbage", "truncated"])
@pytest.mark.parametrize("name", FILES)
def test_every_damaged_checkpoint_file_is_named(checkpoint, tmp_path, name, how):
    import shutil

    copy = shutil.copytree(checkpoint, tmp_path / "checkpoint")
    damage(copy / name, how)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(copy, "eager")
    message = str(err.value)
    assert message.startswith(f"{copy / name} is damaged or incomplete (")
    assert message.endswith("); delete it and re-run the command (the step that writes it runs again)")
    assert "\n" not in message


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_a_damaged_torch_file_is_named(tmp_path, how):
    buf = io.BytesIO()
    torch.save({"heads": torch.zeros(3)}, buf)
    path = tmp_path / "heads.pt"
    path.write_bytes({"garbage": b"\x00garbage" * 8, "truncated": buf.getvalue()[:200], "empty": b""}[how])
    with pytest.raises(CheckpointError, match=f"^{path} is damaged or incomplete"):
        read_torch(path)


@pytest.mark.integration
def test_a_damaged_checkpoint_of_a_finished_run(project, prefect_harness):
    """The user's case: exits.safetensors overwritten after training. Without the output check
    (``--verify off``) evaluate names the file, exit 2; by default the re-run rebuilds the training
    step (one line naming the file) and ends byte-identical to the undisturbed checkpoint."""
    done = exitflow_process(prepare(project), "train", "--strategy", "joint")
    assert done.returncode == 0, done.stdout
    undisturbed = folder_hashes(project / TRAIN)
    exits = project / TRAIN / "checkpoint" / "exits.safetensors"
    exits.write_bytes(b"\x00garbage\x01" * 8)

    refused = exitflow_process(project, "--verify", "off", "evaluate", "--strategy", "joint")
    assert refused.returncode == 2, refused.stdout
    assert "Traceback" not in refused.stdout and "SafetensorError" not in refused.stdout, refused.stdout
    assert error_lines(refused.stdout) == [(f"error: {exits} is damaged or incomplete (Error while deserializing header: "
                                            "header too large); delete it and re-run the command (the step that "
                                            "writes it runs again)")], refused.stdout

    rebuilt = exitflow_process(project, "evaluate", "--strategy", "joint")
    assert rebuilt.returncode == 0, rebuilt.stdout
    assert f"{exits} changed since step train_multi_exit wrote it: rebuilding {project / TRAIN}" in rebuilt.stdout
    assert folder_hashes(project / TRAIN) == undisturbed
    assert (project / "artifacts/sst2/seed-42/evaluate/joint/metrics.json").exists()


def test_a_damaged_token_cache_entry_is_tokenised_again(project, capsys):
    from transformers import AutoTokenizer

    from tasks.features import encode_split
    from tests.faults.conftest import prepare

    tokenizer = AutoTokenizer.from_pretrained(prepare(project) / "backbone")
    cache = project / "cache"
    first = encode_split(project / "data", "sst2", "dev", tokenizer, 16, cache)
    [entry] = cache.iterdir()
    good = entry.read_bytes()
    damage(entry, "truncated")
    assert encode_split(project / "data", "sst2", "dev", tokenizer, 16, cache) == first
    assert f"{entry} is damaged or incomplete (" in capsys.readouterr().err
    assert entry.read_bytes() == good  # written again, byte-identical
