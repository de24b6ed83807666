"""ConsistentEE core: memorized layer, trajectories, rewards, REINFORCE baseline."""

import math

import pytest
import torch

from models.consistentee import (
    PolicyNetworks,
    epsilon_at,
    exit_rewards,
    exit_task_loss,
    memorized_layer,
    policy_loss,
    sample_trajectories,
)


def test_memorized_layer_on_hand_made_correctness():
    # columns: all correct, last wrong, correct-wrong-correct, only last correct, wrong-correct-correct-correct
    correct = torch.tensor([
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, 0, 1, 1, 1],
    ], dtype=torch.bool)
    assert memorized_layer(correct).tolist() == [1, 4, 3, 4, 2]


def test_rewards_vanilla_and_hardness_guided():
    loss = torch.tensor([0.5, 0.5])
    layer = torch.tensor([2, 4])
    assert exit_rewards(loss, layer, 0.1, 4).tolist() == pytest.approx([-0.7, -0.9])
    m = torch.tensor([1, 4])  # easy instance: full depth penalty weight 0.75; hard (M = L): no depth penalty
    assert exit_rewards(loss, layer, 0.1, 4, memorized=m).tolist() == pytest.approx([-0.5 - 0.1 * 0.75 * 2, -0.5])


def test_advantage_is_zero_when_all_copies_agree():
    log_prob = torch.randn(6, requires_grad=True)
    rewards = torch.tensor([1.0, 1.0, 1.0, -2.0, -2.0, -2.0])
    loss = policy_loss(rewards, log_prob, copies=3)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(log_prob.grad) == 0


def test_policy_gradient_raises_log_prob_of_better_than_average_copies():
    log_prob = torch.zeros(4, requires_grad=True)
    policy_loss(torch.tensor([1.0, 0.0, 3.0, 3.0]), log_prob, copies=2).backward()
    assert log_prob.grad.tolist() == pytest.approx([-0.125, 0.125, 0.0, 0.0])


def test_trajectories_stop_at_first_exit_and_never_score_the_last_layer():
    p = torch.tensor([[0.0, 1.0, 0.0, 0.3], [1.0, 1.0, 0.0, 0.3], [0.0, 0.0, 0.0, 0.3], [0.5, 0.5, 0.5, 0.5]],
                     requires_grad=True)  # [L=4, N=4]; the last row is ignored (forced exit)
    layer, log_prob = sample_trajectories(p, epsilon=0.0, generator=torch.Generator().manual_seed(0))
    assert layer[:3].tolist() == [2, 1, 4]
    eps = 1e-8
    assert log_prob[0].item() == pytest.approx(math.log(1 + eps) + math.log(1 + eps), abs=1e-6)  # continue, exit
    assert log_prob[2].item() == pytest.approx(3 * math.log(1 + eps), abs=1e-6)  # three continues, no term at L
    log_prob.sum().backward()
    assert torch.count_nonzero(p.grad[-1]) == 0  # no gradient through a layer-L decision


def test_exploration_is_seeded_and_can_override_the_policy():
    p = torch.zeros(4, 2000)  # policy never exits
    layers, _ = sample_trajectories(p, epsilon=1.0, generator=torch.Generator().manual_seed(1))
    again, _ = sample_trajectories(p, epsilon=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layers, again)
    assert (layers == 1).float().mean().item() == pytest.approx(0.5, abs=0.05)  # uniform random first action
    assert epsilon_at(0, 11) == pytest.approx(0.2) and epsilon_at(10, 11) == pytest.approx(0.0)


def test_task_loss_uses_only_the_exit_layer():
    logits = torch.zeros(3, 2, 2)
    logits[1, 0] = torch.tensor([5.0, -5.0])  # row 0 confident and right at layer 2
    labels = torch.tensor([0, 1])
    loss = exit_task_loss(logits, labels, torch.tensor([2, 3]), regression=False)
    expected = (torch.nn.functional.cross_entropy(logits[1, :1], labels[:1]) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_policy_networks_shape_and_forced_last_exit():
    nets = PolicyNetworks(hidden_size=8, num_layers=3)
    probs = nets.all_layers(torch.randn(3, 5, 8))
    assert probs.shape == (3, 5) and torch.all(probs[-1] == 1) and torch.all((probs[:-1] > 0) & (probs[:-1] < 1))
    assert nets.flops_at(1, 4) == 2 * (8 * 32 + 32 * 1) and nets.flops_at(4, 4) == 0  # no net at the last layer


def _policy_model(layers=4, seed=0):
    from tests.conftest import tiny_backbone
    from models.exiting import MultiExitConfig, MultiExitModel

    torch.manual_seed(seed)
    return MultiExitModel(tiny_backbone("bert", layers), MultiExitConfig(num_outputs=3, head_dropout=0.0, scorer="policy")).eval()


def _force_exit_at(model, k):
    """Make pi = 0 before layer k and pi = 1 at layer k, whatever the state."""
    for layer, net in enumerate(model.policy.nets, start=1):
        torch.nn.init.zeros_(net[2].weight)
        torch.nn.init.constant_(net[2].bias, 20.0 if layer == k else -20.0)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_policy_forced_to_exit_at_k_exits_every_row_at_k(k):
    from models.consistentee import PolicyExit
    from models.criteria import simulate
    from tests.conftest import tiny_batch

    model = _policy_model()
    _force_exit_at(model, k)
    b = tiny_batch(batch=8)
    out = model.early_exit(b["input_ids"], b["attention_mask"], criterion=PolicyExit(0.5))
    assert out.exit_layer.tolist() == [k] * 8
    rec = model(b["input_ids"], b["attention_mask"])
    assert simulate(PolicyExit(0.5), rec.logits, rec.scores)[0].tolist() == [k] * 8


def test_policy_real_early_exit_equals_simulation_and_flops_count_policy():
    import torch.utils.flop_counter as fc

    from models.consistentee import PolicyExit
    from models.criteria import simulate
    from models.flops import instance_flops
    from tests.conftest import tiny_batch

    model = _policy_model(seed=3)
    b = tiny_batch(batch=12, seed=2)
    rec = model(b["input_ids"], b["attention_mask"])
    tau = float(rec.scores["policy"][:-1].median().detach())
    sim, _ = simulate(PolicyExit(tau), rec.logits, rec.scores)
    assert torch.equal(model.early_exit(b["input_ids"], b["attention_mask"], criterion=PolicyExit(tau)).exit_layer, sim)
    one = tiny_batch(batch=1, max_len=9)
    with fc.FlopCounterMode(display=False) as counter:  # pi never > 2: runs all 4 layers and 3 policy nets
        model.early_exit(one["input_ids"], one["attention_mask"], criterion=PolicyExit(2.0))
    assert instance_flops(model, 9, 4, PolicyExit(2.0)) == pytest.approx(counter.get_total_flops(), rel=0.02)


def _moved_groups(model, before):
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    return {g for g in ("backbone", "heads", "policy") if any(n.startswith(g + ".") for n in moved)}


def test_policy_step_changes_only_policy_and_heads_step_no_policy():
    from models.consistentee import heads_step_loss, policy_step_loss
    from models.training import build_optimizer
    from tests.conftest import tiny_batch

    model = _policy_model(seed=5).train()
    batch = tiny_batch(batch=6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model.policy, 1e-2, 0.01)
    loss, info = policy_step_loss(model, batch, copies=4, alpha=0.1, epsilon=0.3,
                                  memorized=torch.tensor([1, 2, 3, 4, 4, 1]), generator=torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    assert _moved_groups(model, before) == {"policy"}
    assert 1.0 <= info["exit_layer"] <= 4.0

    model.zero_grad(set_to_none=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.policy.requires_grad_(False)
    opt = build_optimizer(model, 1e-2, 0.01)
    loss, exit_layer = heads_step_loss(model, batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    moved = _moved_groups(model, before)
    assert "policy" not in moved and "backbone" in moved and "heads" in moved


def test_policy_learns_to_exit_early_when_depth_costs_and_early_heads_are_right():
    """With identical losses at every layer, the depth penalty alone must push pi(exit) up at layer 1."""
    from models.consistentee import policy_step_loss
    from tests.conftest import tiny_batch

    model = _policy_model(seed=6)
    for head in model.heads:  # every head predicts the same thing: loss is equal at every layer
        head.load_state_dict(model.heads[-1].state_dict())
    batch = tiny_batch(batch=8, seed=1)
    opt = torch.optim.Adam(model.policy.parameters(), lr=5e-2)
    g = torch.Generator().manual_seed(0)
    start = model(batch["input_ids"], batch["attention_mask"]).scores["policy"][0].mean().item()
    for _ in range(30):
        loss, _ = policy_step_loss(model, batch, copies=8, alpha=0.5, epsilon=0.1, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = model(batch["input_ids"], batch["attention_mask"]).scores["policy"][0].mean().item()
    assert end > max(0.9, start)


def test_forgetting_events_count_correct_then_wrong_transitions():
    from models.consistentee import forgetting_events

    correct = torch.tensor([  # columns: never learnt, learnt once, forgotten twice, forgotten at the end, always right
        [0, 0, 1, 1, 1],
        [0, 1, 0, 1, 1],
        [0, 1, 1, 1, 1],
        [0, 1, 0, 0, 1],
    ], dtype=torch.bool)
    assert forgetting_events(correct).tolist() == [0, 0, 2, 1, 0]


def test_policy_objective_scores_the_deterministic_policy_with_its_reward():
    from models.consistentee import policy_objective

    logits = torch.zeros(3, 2, 2)
    logits[:, 0] = torch.tensor([4.0, 0.0])   # row 0: every head says class 0 (right)
    logits[:, 1] = torch.tensor([0.0, 4.0])   # row 1: every head says class 1 (wrong; label 0)
    labels = torch.tensor([0, 0])
    certainty = torch.tensor([[0.9, 0.1], [0.2, 0.3], [1.0, 1.0]])  # row 0 exits at 1, row 1 runs to 3
    ce_right, ce_wrong = [torch.nn.functional.cross_entropy(torch.tensor([[4.0, 0.0], [0.0, 4.0]]), labels, reduction="none")[i].item()
                          for i in (0, 1)]
    vanilla = policy_objective(logits, certainty, labels, tau=0.5, alpha=0.1, regression=False, hardness=False)
    assert vanilla["avg_exit_layer"] == 2.0 and vanilla["correct"] == 0.5
    assert vanilla["objective"] == pytest.approx(-(ce_right + 0.1 * 1 + ce_wrong + 0.1 * 3) / 2)
    # hardness: row 0 memorized at 1 (weight 1 - 1/3), row 1 never right (M = L: no depth penalty)
    hard = policy_objective(logits, certainty, labels, tau=0.5, alpha=0.1, regression=False, hardness=True)
    assert hard["objective"] == pytest.approx(-(ce_right + 0.1 * (2 / 3) * 1 + ce_wrong) / 2)


def test_epoch_loops_train_their_own_parameters_and_restore_the_policy():
    from models.consistentee import train_heads_epoch, train_policy_epoch
    from models.training import build_optimizer, linear_schedule
    from tests.conftest import tiny_batch

    model = _policy_model(seed=7)
    data = [dict(tiny_batch(batch=6, seed=s), memorized=torch.tensor([1, 2, 3, 4, 4, 1])) for s in range(3)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    info = train_policy_epoch(model, data, torch.optim.AdamW(model.policy.parameters(), lr=1e-2), copies=4, alpha=0.1,
                              epsilons=[0.2, 0.1, 0.0], hardness=True, generator=torch.Generator().manual_seed(0))
    assert _moved_groups(model, before) == {"policy"} and 1.0 <= info["exit_layer"] <= 4.0

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, 1e-2, 0.01, exclude="policy.")
    assert not any(p is q for g in opt.param_groups for p in g["params"] for q in model.policy.parameters())
    info = train_heads_epoch(model, data, opt, linear_schedule(opt, 0, 3), torch.Generator().manual_seed(0))
    assert _moved_groups(model, before) == {"backbone", "heads"} and info["loss"] > 0
    assert all(p.requires_grad for p in model.policy.parameters())  # unfrozen again for the next policy step


def test_fit_policy_hands_each_epoch_its_slice_of_one_decaying_epsilon_schedule(monkeypatch):
    import models.consistentee as cee
    from tests.conftest import tiny_batch

    seen, reported = [], []
    real = cee.train_policy_epoch

    def recording(model, batches, optimizer, copies, alpha, epsilons, *args):
        seen.append(list(epsilons))
        return real(model, batches, optimizer, copies, alpha, epsilons, *args)

    monkeypatch.setattr(cee, "train_policy_epoch", recording)
    model = _policy_model(seed=7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = [dict(tiny_batch(batch=6, seed=s), memorized=torch.tensor([1, 2, 3, 4, 4, 1])) for s in range(2)]
    info = cee.fit_policy(model, lambda epoch: data, steps_per_epoch=2, epochs=3, lr=1e-2, copies=4, alpha=0.1,
                          epsilon_start=0.3, epsilon_end=0.0, hardness=True, generator=torch.Generator().manual_seed(0),
                          on_epoch=lambda epoch, i: reported.append((epoch, i)))
    assert seen == [[epsilon_at(i, 6, 0.3, 0.0) for i in range(2 * e, 2 * e + 2)] for e in range(3)]
    assert [e for e, _ in reported] == [1, 2, 3] and reported[-1][1] == info
    assert _moved_groups(model, before) == {"policy"}


def test_fit_heads_decays_its_learning_rate_to_zero_and_leaves_the_policy_alone(monkeypatch):
    import models.consistentee as cee
    from tests.conftest import tiny_batch

    lrs = []
    real = cee.train_heads_epoch

    def recording(model, batches, optimizer, scheduler, *args):
        out = real(model, batches, optimizer, scheduler, *args)
        lrs.append(scheduler.get_last_lr()[0])
        return out

    monkeypatch.setattr(cee, "train_heads_epoch", recording)
    model = _policy_model(seed=7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = [tiny_batch(batch=6, seed=s) for s in range(2)]
    cee.fit_heads(model, lambda epoch: data, steps_per_epoch=2, epochs=2, lr=1e-2, weight_decay=0.01, warmup_ratio=0.0,
                  generator=torch.Generator().manual_seed(0))
    assert lrs == [pytest.approx(0.5e-2), 0.0]  # one schedule over both epochs, not one per epoch
    assert _moved_groups(model, before) == {"backbone", "heads"}
