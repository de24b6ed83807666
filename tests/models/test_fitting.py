"""The multi-exit fit: dev selection keeps the best final-stage epoch, two_stage's stage 2 leaves the
backbone alone, a resumed fit equals an uninterrupted one, dynamics are recorded where asked."""

import copy

import pytest
import torch

from models import fitting
from models.fitting import FitConfig, dynamics_steps, fit_multi_exit, resume_point
from tests.conftest import tiny_batch, tiny_model


def _cfg(objective="joint", epochs=3, **kw):
    return FitConfig(objective=objective, epochs=epochs, steps_per_epoch=2, lr=1e-2, weight_decay=0.01,
                     warmup_ratio=0.0, max_grad_norm=1.0, **kw)


def _train_batches(stage, epoch):
    return [tiny_batch(batch=8, seed=100 * stage + 10 * epoch + i) for i in range(2)]


def _dev_batches():
    return [tiny_batch(batch=12, seed=999)]


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _scripted_selection(monkeypatch, scores):
    """Make the dev selection scores of successive epochs ``scores`` (the rest of each record is real)."""
    real, it = fitting.dev_epoch_record, iter(scores)

    def scripted(*args, **kwargs):
        return {**real(*args, **kwargs), "dev_selection_score": next(it)}

    monkeypatch.setattr(fitting, "dev_epoch_record", scripted)


def test_selection_keeps_the_best_dev_epoch_weights_not_the_last(monkeypatch):
    _scripted_selection(monkeypatch, [20.0, 90.0, 50.0])
    model, seen = tiny_model(seed=0), {}
    fit = fit_multi_exit(model, _cfg(), _train_batches, _dev_batches, "accuracy",
                         on_epoch=lambda record, state: seen.__setitem__(record["epoch"], _weights(model)))
    assert fit.selected_epoch == 2 and fit.selected is fit.history[1]
    assert [r["epoch"] for r in fit.history] == [1, 2, 3]
    after = _weights(model)
    assert all(torch.equal(after[k], seen[2][k]) for k in after)
    assert not all(torch.equal(after[k], seen[3][k]) for k in after)


def test_two_stage_stage_one_never_chooses_and_stage_two_leaves_the_backbone_alone(monkeypatch):
    _scripted_selection(monkeypatch, [99.0, 10.0, 30.0, 20.0])  # stage 1 epoch 1 scores best of all
    model, seen = tiny_model(seed=0), {}
    fit = fit_multi_exit(model, _cfg("two_stage", epochs=2), _train_batches, _dev_batches, "accuracy",
                         on_epoch=lambda record, state: seen.__setitem__((record["stage"], record["epoch"]), _weights(model)))
    assert [(r["stage"], r["epoch"]) for r in fit.history] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert fit.selected_epoch == 1 and fit.selected["stage"] == 2
    end_of_stage1, selected, final = seen[(1, 2)], seen[(2, 1)], _weights(model)
    assert all(torch.equal(final[k], selected[k]) for k in final)
    backbone = [k for k in end_of_stage1 if k.startswith("backbone.")]
    assert backbone and all(torch.equal(selected[k], end_of_stage1[k]) for k in backbone)
    first_head = [k for k in end_of_stage1 if k.startswith("heads.0.")]
    assert not all(torch.equal(selected[k], end_of_stage1[k]) for k in first_head)  # stage 2 trains the other exits


@pytest.mark.parametrize("objective,stop_after", [("joint", 1), ("two_stage", 2), ("two_stage", 3)])
def test_a_resumed_fit_equals_an_uninterrupted_one(objective, stop_after):
    cfg = _cfg(objective, epochs=2)
    full_model = tiny_model(seed=0)
    full = fit_multi_exit(full_model, cfg, _train_batches, _dev_batches, "accuracy")

    saved = {}

    def crash_after(record, state):
        if len(state["history"]) > stop_after:
            raise KeyboardInterrupt
        saved["state"] = copy.deepcopy(state)

    with pytest.raises(KeyboardInterrupt):
        fit_multi_exit(tiny_model(seed=0), cfg, _train_batches, _dev_batches, "accuracy", on_epoch=crash_after)
    resumed_model = tiny_model(seed=5)  # other weights: the resume state must bring back everything
    resumed = fit_multi_exit(resumed_model, cfg, _train_batches, _dev_batches, "accuracy", resume=saved["state"])
    assert resumed.history == full.history and resumed.selected_epoch == full.selected_epoch
    a, b = _weights(full_model), _weights(resumed_model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_point_moves_to_the_next_stage_after_a_stage_s_last_epoch():
    assert resume_point({"stage": 1, "epoch": 1}, 3) == (1, 2)
    assert resume_point({"stage": 1, "epoch": 3}, 3) == (2, 1)


def test_dynamics_are_recorded_at_evenly_spaced_steps_of_every_epoch():
    assert dynamics_steps(4, 2) == {2, 4}
    model = tiny_model(seed=0)
    rows = [tiny_batch(batch=5, seed=7)]
    fit = fit_multi_exit(model, _cfg(epochs=2, dynamics_evals_per_epoch=2), _train_batches, _dev_batches, "accuracy",
                         train_rows=lambda: rows)
    assert [step for step, _ in fit.dynamics] == [1, 2, 3, 4]  # 2 steps per epoch, recorded after each
    assert fit.dynamics[0][1].shape == (model.num_layers, 5)
