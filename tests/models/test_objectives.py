"""Each objective updates exactly the parameters it should; LTE targets and loss weights."""

import pytest
import torch

from models.berxit import lte_targets
from models.objectives import objective_loss, per_exit_losses
from models.training import build_optimizer, linear_schedule, train_epoch
from tests.conftest import tiny_batch, tiny_model


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _moved(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def _groups(model, names):
    L = model.num_layers
    heads = {k: {n for n in names if n.startswith(f"heads.{k - 1}.")} for k in range(1, L + 1)}
    backbone = {n for n in names if n.startswith("backbone.")}
    lte = {n for n in names if n.startswith("lte.")}
    return backbone, heads, lte


def _run_steps(objective, steps, stage=1, weight_decay=0.01):
    model = tiny_model("bert", layers=3, lte=True, seed=0)
    before = _snapshot(model)
    opt = build_optimizer(model, 1e-2, weight_decay)
    sched = linear_schedule(opt, 0, 100)
    batch = tiny_batch(batch=8)
    train_epoch(model, [batch] * steps, opt, sched, objective, global_step=0, stage=stage)
    return model, _moved(model, before), set(before)


def test_joint_and_weighted_move_everything():
    for objective in ("joint", "weighted"):
        model, moved, names = _run_steps(objective, 1)
        # pooler of the backbone is unused by exits: everything the forward pass touches moves
        assert moved == {n for n in names if "pooler" not in n}


def test_two_stage_stage1_moves_backbone_last_head_and_lte_only():
    model, moved, names = _run_steps("two_stage", 1, stage=1)
    backbone, heads, lte = _groups(model, names)
    assert heads[3] <= moved and lte <= moved and backbone - {n for n in backbone if "pooler" in n} <= moved
    assert not (heads[1] | heads[2]) & moved


def test_two_stage_stage2_freezes_backbone_and_last_head():
    model, moved, names = _run_steps("two_stage", 2, stage=2)
    backbone, heads, lte = _groups(model, names)
    assert heads[1] <= moved and heads[2] <= moved and lte <= moved
    assert not (backbone | heads[3]) & moved
    assert not model.backbone.training  # backbone kept in eval mode (no dropout) in stage 2


def test_alternating_odd_step_leaves_intermediate_heads_untouched_even_with_weight_decay():
    model, moved, names = _run_steps("alternating", 1, weight_decay=0.5)
    backbone, heads, lte = _groups(model, names)
    assert heads[3] <= moved
    assert not (heads[1] | heads[2]) & moved  # grads set to None: AdamW does not even decay them


def test_alternating_even_step_moves_intermediate_heads():
    model = tiny_model("bert", layers=3, lte=True, seed=0)
    opt = build_optimizer(model, 1e-2, 0.01)
    sched = linear_schedule(opt, 0, 100)
    batch = tiny_batch(batch=8)
    train_epoch(model, [batch], opt, sched, "alternating", global_step=0)  # step 1: odd
    before = _snapshot(model)
    train_epoch(model, [batch], opt, sched, "alternating", global_step=1)  # step 2: even
    _, heads, _ = _groups(model, set(before))
    moved = _moved(model, before)
    assert heads[1] <= moved and heads[2] <= moved


def test_weighted_loss_matches_hand_computation():
    model = tiny_model("bert", layers=3, lte=False)
    b = tiny_batch()
    out = model(b["input_ids"], b["attention_mask"])
    per = per_exit_losses(out, b["labels"], regression=False)
    assert objective_loss("weighted", out, b["labels"], False, 1).item() == pytest.approx(((1 * per[0] + 2 * per[1] + 3 * per[2]) / 6).item(), rel=1e-6)
    assert objective_loss("joint", out, b["labels"], False, 1).item() == pytest.approx(per.sum().item(), rel=1e-6)
    assert objective_loss("alternating", out, b["labels"], False, 1).item() == pytest.approx(per[2].item(), rel=1e-6)


def test_lte_targets_classification_and_regression():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])  # [L=1, b=2, c=2]
    assert lte_targets(logits, torch.tensor([0, 0]), regression=False).tolist() == [[1.0, 0.0]]
    reg = torch.tensor([[[1.0], [3.0]]])
    target = lte_targets(reg, torch.tensor([1.0, 1.5]), regression=True)
    assert target[0, 0].item() == pytest.approx(1.0)
    assert target[0, 1].item() == pytest.approx(1 - torch.tanh(torch.tensor(1.5)).item())


def test_nan_loss_stops_with_clear_error():
    from models.training import NonFiniteLossError

    model = tiny_model("bert", layers=2, regression=True)
    opt = build_optimizer(model, 1e-3, 0.0)
    batch = tiny_batch(regression=True)
    batch["labels"] = torch.full((6,), float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1"):
        train_epoch(model, [batch], opt, linear_schedule(opt, 0, 10), "joint", 0)


def test_policy_model_init_loss_is_the_weighted_ce_alone():
    """ConsistentEE's init (weighted objective on a model with policy networks) must not add
    BERxiT's LTE loss on the policy's exit probabilities, nor train the policy at all."""
    from models.exit_heads import task_loss
    from models.exiting import MultiExitConfig, MultiExitModel
    from tests.conftest import tiny_backbone

    torch.manual_seed(1)
    model = MultiExitModel(tiny_backbone("bert", 3), MultiExitConfig(num_outputs=3, head_dropout=0.0, scorer="policy")).eval()
    b = tiny_batch(batch=8)
    out = model(b["input_ids"], b["attention_mask"])
    ce = task_loss(out.logits, b["labels"], False).mean(-1)  # [L]
    weighted_ce = (1 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 6
    loss = objective_loss("weighted", out, b["labels"], False, 1)
    assert loss.item() == weighted_ce.item()  # exactly: no (pi_i - 1[correct])^2 term
    loss.backward()
    assert all(p.grad is None for p in model.policy.parameters())


def test_single_exit_checkpoint_is_selected_on_the_last_exit_only():
    from models.objectives import selection_score, trained_exits

    # epoch 1: untrained heads 1-2 happen to score high, the trained last exit is worse
    epoch1, epoch2 = [70.0, 72.0, 80.0], [50.0, 51.0, 82.0]
    assert trained_exits("single", 3) == [3]
    assert selection_score("single", epoch2) > selection_score("single", epoch1)
    assert selection_score("joint", epoch1) > selection_score("joint", epoch2)  # every exit trains
    assert selection_score("two_stage", epoch1) == pytest.approx(74.0)
    with pytest.raises(ValueError, match="unknown objective"):
        trained_exits("solo", 3)
