"""The LECO search loop: per-epoch row orders, the trajectory it records, and a resumed search equal
to an uninterrupted one."""

import copy

import pytest
import torch

from models.leco_search import SearchConfig, search_architecture, search_orders
from tests.conftest import tiny_batch
from tests.models.test_leco import leco_model


def _cfg(epochs=3):
    return SearchConfig(epochs=epochs, steps_per_epoch=2, lr=1e-2, weight_decay=0.01, warmup_ratio=0.0,
                        max_grad_norm=1.0, architecture_lr=5e-2, architecture_weight_decay=0.0)


def _halves(epoch):
    return ([tiny_batch(batch=6, seed=10 * epoch + i) for i in range(2)],
            [tiny_batch(batch=6, seed=10 * epoch + 5 + i) for i in range(2)])


def _dev():
    return [tiny_batch(batch=8, seed=99)]


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_search_orders_cover_the_rows_once_in_two_halves_and_change_per_epoch():
    d1, d2 = search_orders(11, 3, 1)
    assert sorted(d1 + d2) == list(range(11)) and len(d1) == 5
    assert search_orders(11, 3, 1) == (d1, d2)
    assert search_orders(11, 3, 2) != (d1, d2)
    assert d1 != sorted(d1) or d2 != sorted(d2)  # shuffled, not the sorted halves


def test_the_trajectory_has_one_entry_per_epoch_and_the_history_derives_each():
    model = leco_model(layers=2)
    start = model.heads.architecture_weights()
    result = search_architecture(model, _cfg(), _halves, _dev, "accuracy")
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and len(result.trajectory) == 3
    assert [h["step"] for h in result.history] == [2, 4, 6]
    assert result.trajectory[-1] == model.heads.architecture_weights() and result.trajectory[0] != start
    assert all(len(h["derived"]) == 2 and len(h["dev_layer_scores"]) == 2 for h in result.history)


@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_resumed_search_equals_an_uninterrupted_one(stop_after):
    full_model = leco_model(layers=2)
    full = search_architecture(full_model, _cfg(), _halves, _dev, "accuracy")

    saved = {}

    def crash_after(record, weights, state):
        if record["epoch"] > stop_after:
            raise KeyboardInterrupt
        saved["state"] = copy.deepcopy(state)

    with pytest.raises(KeyboardInterrupt):
        search_architecture(leco_model(layers=2), _cfg(), _halves, _dev, "accuracy", on_epoch=crash_after)
    resumed_model = leco_model(layers=2, seed=4)
    resumed = search_architecture(resumed_model, _cfg(), _halves, _dev, "accuracy", resume=saved["state"])
    assert resumed.history == full.history and resumed.trajectory == full.trajectory
    a, b = _weights(full_model), _weights(resumed_model)
    assert all(torch.equal(a[k], b[k]) for k in a)
