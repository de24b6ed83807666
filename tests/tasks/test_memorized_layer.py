"""A memorized-layer artifact is only used with the training split it was computed on."""

import pytest
import torch

from tasks.consistentee import MemorizedLayerError, load_memorized_layer
from tasks.features import split_fingerprint
from tasks.io import atomic_torch_save


def _split(n, shift=0):
    return {"input_ids": [[2, 5 + i + shift, 3] for i in range(n)], "labels": [i % 2 for i in range(n)]}


def _save(path, enc, memorized):
    atomic_torch_save(path / "memorized.pt", {"memorized_layer": memorized, "final_loss": torch.zeros(len(memorized)),
                                              "fingerprint": split_fingerprint(enc), "rows": len(memorized)})


def test_matching_split_loads(tmp_path):
    enc = _split(4)
    _save(tmp_path, enc, torch.tensor([1, 3, 2, 3]))
    assert load_memorized_layer(tmp_path, enc).tolist() == [1, 3, 2, 3]


def test_other_size_is_refused_with_both_counts(tmp_path):
    _save(tmp_path, _split(4), torch.tensor([1, 3, 2, 3]))
    with pytest.raises(MemorizedLayerError, match=r"memorized.pt: memorized layer has 4 rows but the training split has 5"):
        load_memorized_layer(tmp_path, _split(5))


def test_same_size_other_content_is_refused(tmp_path):
    _save(tmp_path, _split(4), torch.tensor([1, 3, 2, 3]))
    with pytest.raises(MemorizedLayerError, match=r"computed on different training rows \(content hash"):
        load_memorized_layer(tmp_path, _split(4, shift=1))
    shuffled = _split(4)
    shuffled["labels"] = [1, 0, 1, 0]  # same tokens, other labels
    with pytest.raises(MemorizedLayerError, match="different training rows"):
        load_memorized_layer(tmp_path, shuffled)


def test_missing_artifact_says_which_step_to_run(tmp_path):
    with pytest.raises(MemorizedLayerError, match="run the memorized_layer step first"):
        load_memorized_layer(tmp_path, _split(2))
