"""Checkpoints round-trip every exit module (heads, LTE, policy, HashEE table)."""

import pytest
import torch
from transformers import BertTokenizer

from models.exiting import MultiExitConfig, MultiExitModel
from models.hashee import HashEEModel, build_random_hash
from tasks.backbones import load_checkpoint, save_checkpoint
from tests.conftest import VOCAB, tiny_backbone, tiny_batch


@pytest.mark.parametrize("kind", ["lte", "policy", "hashee"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, kind):
    torch.manual_seed(0)
    backbone = tiny_backbone("bert", 3)
    if kind == "hashee":
        model = HashEEModel(backbone, MultiExitConfig(num_outputs=2, head_dropout=0.0),
                            build_random_hash(VOCAB, 3, 3, [0, 1, 2], seed=4))
    else:
        model = MultiExitModel(backbone, MultiExitConfig(num_outputs=2, head_dropout=0.0, scorer=kind))
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])})
    save_checkpoint(model.eval(), tok, tmp_path / "ckpt", {"task": "t"})
    loaded, _, meta = load_checkpoint(tmp_path / "ckpt", "eager")
    assert type(loaded) is type(model) and meta["task"] == "t"
    b = tiny_batch(batch=4, labels=2)
    a, c = model(b["input_ids"], b["attention_mask"]), loaded(b["input_ids"], b["attention_mask"])
    torch.testing.assert_close(a.logits, c.logits)
    assert a.scores.keys() == c.scores.keys() == ({kind} - {"hashee"})
    for name in a.scores:
        torch.testing.assert_close(a.scores[name], c.scores[name])


def test_checkpoints_of_per_layer_heads_carry_no_exit_stack_fields():
    """Exit-stack settings are saved only when set: the default run's checkpoints read as before them."""
    from models.exiting import MultiExitConfig
    from config.params import TrainConfig

    assert "head_options" not in MultiExitConfig(num_outputs=2).to_dict()
    stack = MultiExitConfig(num_outputs=2, head="past_future", head_options={"past": "max"})
    assert MultiExitConfig.from_dict(stack.to_dict()) == stack
    assert MultiExitConfig.from_dict(MultiExitConfig(num_outputs=2).to_dict()).head_options == {}
    assert not {"head_options", "freeze_layers"} & set(TrainConfig().record())
    assert TrainConfig(head="past_future", head_options={"past": "max"}, freeze_layers=2).record()["freeze_layers"] == 2
