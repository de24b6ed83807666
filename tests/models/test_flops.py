"""Analytic FLOPs against torch.utils.flop_counter on eager attention."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.criteria import Static
from models.flops import full_model_flops, instance_flops
from tests.conftest import tiny_batch, tiny_model


def _counted(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("family", ["bert", "electra", "albert", "distilbert"])
@pytest.mark.parametrize("head", ["linear", "pooler", "mha"])
def test_full_model_flops_match_flop_counter(family, head):
    model = tiny_model(family, layers=3, head=head, attn="eager")
    ids = tiny_batch(batch=1, max_len=12)
    counted = _counted(lambda: model.early_exit(ids["input_ids"], ids["attention_mask"], criterion=None))
    analytic = full_model_flops(model, torch.tensor([12])).item()
    assert analytic == pytest.approx(counted, rel=0.02)


@pytest.mark.parametrize("head", ["linear", "mha"])
def test_early_exit_flops_include_every_passed_head_and_lte(head):
    model = tiny_model("bert", layers=4, head=head, lte=True, attn="eager")
    ids = tiny_batch(batch=1, max_len=10)
    # static exit at 2 runs only head 2; a criterion that needs every head runs heads 1..k and LTE
    counted_static = _counted(lambda: model.early_exit(ids["input_ids"], ids["attention_mask"], criterion=Static(2)))
    assert instance_flops(model, 10, 2, every_head=False) == pytest.approx(counted_static, rel=0.02)
    from models.berxit import LearnedExit

    out = model.early_exit(ids["input_ids"], ids["attention_mask"], criterion=LearnedExit(2.0))  # never fires early
    counted = _counted(lambda: model.early_exit(ids["input_ids"], ids["attention_mask"], criterion=LearnedExit(2.0)))
    assert out.exit_layer.item() == 4
    assert instance_flops(model, 10, 4, every_head=True) == pytest.approx(counted, rel=0.02)
