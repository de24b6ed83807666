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
def test_early_exit_flops_count_what_the_criterion_runs(head):
    from models.berxit import LearnedExit
    from models.criteria import Entropy

    model = tiny_model("bert", layers=4, head=head, lte=True, attn="eager")
    ids = tiny_batch(batch=1, max_len=10)

    def counted(criterion):
        out = model.early_exit(ids["input_ids"], ids["attention_mask"], criterion=criterion)
        return _counted(lambda: model.early_exit(ids["input_ids"], ids["attention_mask"], criterion=criterion)), out

    # static exit at 2 runs head 2 only, and no LTE
    static, _ = counted(Static(2))
    assert instance_flops(model, 10, 2, Static(2)) == pytest.approx(static, rel=0.02)
    # LTE's criterion runs heads 1..4 and LTE at each (it never fires early here)
    learned, out = counted(LearnedExit(2.0))
    assert out.exit_layer.item() == 4
    assert instance_flops(model, 10, 4, LearnedExit(2.0)) == pytest.approx(learned, rel=0.02)
    # entropy on the same LTE model runs heads 1..4 and never LTE: charged without it
    entropy, out = counted(Entropy(-1.0))
    assert out.exit_layer.item() == 4
    assert instance_flops(model, 10, 4, Entropy(-1.0)) == pytest.approx(entropy, rel=0.02)
    lte_cost = sum(model.scorer.flops_at(k, 4) for k in range(1, 5))
    assert lte_cost > 0 and instance_flops(model, 10, 4, LearnedExit(2.0)) - instance_flops(model, 10, 4, Entropy(-1.0)) == lte_cost
