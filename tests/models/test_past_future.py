"""Global Past-Future exits (models/past_future.py) on tiny models: every strategy exits for real
as simulated, FLOPs match FlopCounterMode, and each equation does what the paper says."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.criteria import Entropy, Patience, Static, simulate
from models.exit_heads import task_loss
from models.exiting import MultiExitConfig, MultiExitModel
from models.flops import instance_flops
from models.objectives import objective_loss
from models.past_future import NAIVE, PAST_STRATEGIES, Aggregator
from models.training import build_optimizer, stochastic_freeze, train_epoch
from tests.conftest import tiny_backbone, tiny_batch

SETTINGS = [(past, future) for past in PAST_STRATEGIES for future in ((False,) if past in NAIVE else (False, True))]


def pf_model(past="concat", future=True, layers=4, num_outputs=3, regression=False, gate="scalar", seed=0):
    torch.manual_seed(seed)
    config = MultiExitConfig(num_outputs=1 if regression else num_outputs, regression=regression, head="past_future",
                             head_dropout=0.0, pooling="mean", head_options={"past": past, "future": future, "gate": gate})
    return MultiExitModel(tiny_backbone("bert", layers, seed=seed), config).eval()


def spread_threshold(criterion, logits):
    """A threshold at which rows exit at several different layers (compaction is exercised)."""
    scores = criterion.score(logits[:-1], None).flatten()
    for q in torch.linspace(0.02, 0.98, 49):
        tau = float(scores.quantile(q))
        layers, _ = simulate(criterion(tau), logits)
        if len(set(layers.tolist())) >= 2 and layers.min() < logits.shape[0]:
            return tau
    raise AssertionError("no threshold spreads the exits")


@pytest.mark.parametrize("past,future", SETTINGS)
def test_real_early_exit_equals_the_simulation(past, future):
    model = pf_model(past, future)
    with torch.no_grad():
        for classifier in model.heads.classifiers:  # confident, varied predictions: rows exit at many layers
            classifier.weight.mul_(40.0)
    b = tiny_batch(batch=24, max_len=9, seed=3)
    rec = model(b["input_ids"], b["attention_mask"])
    tau = spread_threshold(Entropy, rec.logits.detach())
    sim_layer, sim_logits = simulate(Entropy(tau), rec.logits)
    real = model.early_exit(b["input_ids"], b["attention_mask"], criterion=Entropy(tau))
    assert real.exit_layer.tolist() == sim_layer.tolist()
    torch.testing.assert_close(real.logits, sim_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("past,future", SETTINGS)
def test_flops_match_the_flop_counter(past, future):
    model = pf_model(past, future)
    one = tiny_batch(batch=1, max_len=10)

    def counted(criterion):
        with FlopCounterMode(display=False) as counter:
            out = model.early_exit(one["input_ids"], one["attention_mask"], criterion=criterion)
        return counter.get_total_flops(), out.exit_layer.item()

    every, layer = counted(Entropy(-1.0))  # never fires: every exit runs, all 4 layers
    assert layer == 4 and instance_flops(model, 10, 4, Entropy(-1.0)) == every
    static, layer = counted(Static(2))  # memory updates at layer 1, one decision at layer 2
    assert layer == 2 and instance_flops(model, 10, 2, Static(2)) == static
    assert static < instance_flops(model, 10, 2, Entropy(-1.0)) or past in NAIVE


@pytest.mark.parametrize("past", ["max", "avg", "attn", "concat", "lstm"])
def test_the_incremental_past_equals_aggregating_all_states_at_once(past):
    torch.manual_seed(0)
    agg = Aggregator(past, 8, slots=[1, 2, 3, 4])
    states = torch.randn(5, 4, 8)  # [b, m, d]
    memory = {}
    for k in range(1, 5):
        memory = agg.add(memory, states[:, k - 1])
        torch.testing.assert_close(agg.read(memory, k, states[:, k - 1]), agg.over(states[:, :k], k, states[:, k - 1]))
    expected = {"max": states.amax(1), "avg": states.mean(1)}.get(past)
    if expected is not None:
        torch.testing.assert_close(agg.read(memory, 4, None), expected)


def test_attn_pools_with_the_current_state_as_query():
    agg = Aggregator("attn", 2, slots=[2])
    states = torch.tensor([[[10.0, 0.0], [0.0, 10.0]]])  # [1, 2, 2]
    pooled = agg.over(states, 2, torch.tensor([[0.0, 10.0]]))
    assert pooled[0, 1] > 9.9 and pooled[0, 0] < 0.1  # the query picks the matching state


def test_the_cosine_loss_is_zero_when_learners_copy_their_targets_and_positive_otherwise():
    model = pf_model("concat", True, layers=4)
    stack = model.heads
    targets = torch.randn(3, 32)  # s_2, s_3, s_4 (inside tanh's range after tanh)
    with torch.no_grad():
        stack.learner_weight.zero_()
        stack.learner_bias.copy_(torch.atanh(torch.tanh(targets)))  # Learner^j(anything) = tanh(b_j) = s_j
    states = torch.cat([torch.randn(1, 5, 32), torch.tanh(targets)[:, None].expand(3, 5, 32)])  # [L, b, d]
    assert stack.auxiliary_loss(states).item() == pytest.approx(0.0, abs=1e-6)
    moved = states.clone()
    moved[3] = -moved[3]  # the real s_4 points the other way: every pair (k, 4) costs 2
    # pairs: k=1: (2,3,4) -> mean 2/3; k=2: (3,4) -> 1; k=3: (4) -> 2; mean over k = (2/3 + 1 + 2) / 3
    assert stack.auxiliary_loss(moved).item() == pytest.approx((2 / 3 + 1 + 2) / 3, abs=1e-5)


def test_the_cosine_loss_trains_learners_not_the_states():
    model = pf_model("avg", True, layers=3).train()
    states = torch.randn(3, 4, 32, requires_grad=True)
    model.heads.auxiliary_loss(states).backward()
    assert states.grad is None  # neither sources nor targets: imitation must not reshape the backbone
    assert model.heads.learner_weight.grad.abs().sum() > 0 and model.heads.learner_bias.grad.abs().sum() > 0


def test_the_prediction_path_still_trains_the_states_through_the_learners():
    model = pf_model("avg", True, layers=3).train()
    b = tiny_batch(batch=4, max_len=9, seed=2)
    out = model(b["input_ids"], b["attention_mask"])
    F.cross_entropy(out.logits[0], torch.tensor([0, 1, 2, 0])).backward()  # exit 1: z_1 reads imitated s_2, s_3
    assert model.heads.learner_weight.grad[0].abs().sum() > 0  # Learner^2 on s_1
    assert model.heads.poolers[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_the_gate_merges_past_and_future_and_returns_the_past_state_at_layer_L(gate):
    model = pf_model("max", True, layers=4, gate=gate)
    stack = model.heads
    b = tiny_batch(batch=5, max_len=9, seed=1)
    rec = model(b["input_ids"], b["attention_mask"])
    s = rec.states  # [L, b, d]
    s_p = s.amax(0)  # max over s_1..s_4
    torch.testing.assert_close(rec.logits[3], stack.classifiers[3](s_p))  # z_L = s_p exactly
    # at k = 2: z = alpha s_p + (1 - alpha) max(imitated s_3, s_4)
    s_p2 = s[:2].amax(0)
    alpha = torch.sigmoid(stack.gate(s_p2))
    assert alpha.shape[-1] == (1 if gate == "scalar" else 32)
    z = alpha * s_p2 + (1 - alpha) * stack.imitate(s[1], 2).amax(1)
    torch.testing.assert_close(rec.logits[1], stack.classifiers[1](z))
    with torch.no_grad():
        stack.gate.bias.fill_(50.0)  # alpha -> 1: the past alone
    torch.testing.assert_close(model(b["input_ids"], b["attention_mask"]).logits[1], stack.classifiers[1](s_p2))


def test_learners_imitate_each_target_layer_from_the_current_state():
    stack = pf_model("avg", True, layers=4).heads
    state = torch.randn(2, 32)
    imitated = stack.imitate(state, 1)  # targets 2, 3, 4
    for j in (2, 3, 4):
        expected = torch.tanh(state @ stack.learner_weight[j - 2].T + stack.learner_bias[j - 2])
        torch.testing.assert_close(imitated[:, j - 2], expected)
    torch.testing.assert_close(stack.imitate(state, 3)[:, 0], imitated[:, 2])  # Learner^4 shared across sources


def test_the_loss_is_weighted_cross_entropy_plus_the_cosine_loss():
    model = pf_model("concat", True, layers=3)
    b = tiny_batch(batch=6, max_len=9, seed=2)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(b["input_ids"], b["attention_mask"])
    ce = torch.stack([F.cross_entropy(out.logits[k], labels) for k in range(3)])
    expected = (1 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 6 + model.heads.auxiliary_loss(out.states)
    torch.testing.assert_close(objective_loss("weighted", out, labels, False, step=1), expected)


@pytest.mark.parametrize("past", NAIVE)
def test_naive_baselines_train_their_layer_heads_and_exit_on_the_combination(past):
    model = pf_model(past, False, layers=3)
    b = tiny_batch(batch=6, max_len=9, seed=2)
    out = model(b["input_ids"], b["attention_mask"])
    local = torch.stack([model.heads.classifiers[k](out.states[k]) for k in range(3)])
    torch.testing.assert_close(out.trained_logits, local)
    if past == "ensemble":
        torch.testing.assert_close(out.logits[2].exp(), local.softmax(-1).mean(0))
    else:
        counts = F.one_hot(local.argmax(-1), 3).float().sum(0)  # [b, c] votes of layers 1-3
        assert out.logits[2].argmax(-1).tolist() == counts.argmax(-1).tolist()
        torch.testing.assert_close(out.logits[2].exp(), (counts + 1) / (3 + 3))  # add-one smoothed shares
        # more agreeing layers, lower entropy: a unanimous vote at layer 1 is less sure than at layer 3
        first = F.one_hot(local[0].argmax(-1), 3).float()
        unanimous = (counts.amax(-1) == 3)
        if unanimous.any():
            assert (Entropy.score(out.logits[2], None)[unanimous] < Entropy.score(out.logits[0], None)[unanimous]).all()
        torch.testing.assert_close(out.logits[0].exp(), (first + 1) / (1 + 3))
    assert out.auxiliary_loss is None


def test_regression_trains_with_squared_error_and_exits_by_patience():
    model = pf_model("lstm", True, layers=3, regression=True).train()
    b = tiny_batch(batch=8, max_len=9, seed=4)
    labels = torch.linspace(0, 5, 8)
    out = model(b["input_ids"], b["attention_mask"])
    assert out.logits.shape == (3, 8, 1)
    mse = task_loss(out.logits, labels, True).mean(-1)
    expected = (mse * torch.tensor([1.0, 2.0, 3.0])).sum() / 6 + out.auxiliary_loss
    torch.testing.assert_close(objective_loss("weighted", out, labels, True, step=1), expected)
    batch = [{**b, "labels": labels}] * 30
    opt = build_optimizer(model, 1e-2, 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    first = objective_loss("weighted", model(b["input_ids"], b["attention_mask"]), labels, True, 1).item()
    train_epoch(model, batch, opt, sched, "weighted", 0)
    model.eval()
    assert objective_loss("weighted", model(b["input_ids"], b["attention_mask"]), labels, True, 1).item() < first / 2
    rec = model(b["input_ids"], b["attention_mask"])
    sim_layer, sim_out = simulate(Patience(1, delta=0.5), rec.logits)
    real = model.early_exit(b["input_ids"], b["attention_mask"], criterion=Patience(1, delta=0.5))
    assert real.exit_layer.tolist() == sim_layer.tolist()
    torch.testing.assert_close(real.logits, sim_out, atol=1e-5, rtol=1e-5)


def test_vote_needs_classes_and_bad_options_name_the_choices():
    with pytest.raises(ValueError, match="'vote' strategy needs class labels"):
        pf_model("vote", False, regression=True)
    with pytest.raises(ValueError, match="unknown past strategy 'median'; choose one of max, avg"):
        pf_model("median", True)
    with pytest.raises(ValueError, match="unknown gate 'mlp'; choose one of scalar, vector"):
        pf_model("max", True, gate="mlp")
    with pytest.raises(ValueError, match="'ensemble' baseline .* no future part"):
        pf_model("ensemble", True)
    with pytest.raises(ValueError, match="unknown past_future option.*gates"):
        MultiExitModel(tiny_backbone("bert", 2), MultiExitConfig(num_outputs=2, head="past_future",
                                                                 head_options={"gates": "scalar"}))


def test_stochastic_freeze_decays_from_every_layer_to_none():
    assert stochastic_freeze(3, step=1, total_steps=100, seed=0) == {1, 2, 3}  # p = 1
    assert stochastic_freeze(3, step=101, total_steps=100, seed=0) == set()  # p = 0
    assert stochastic_freeze(0, step=1, total_steps=100, seed=0) == set()
    share = sum(len(stochastic_freeze(2, 51, 100, seed)) for seed in range(2000)) / 4000  # p = 0.5
    assert 0.46 < share < 0.54
    assert stochastic_freeze(3, 40, 100, seed=7) == stochastic_freeze(3, 40, 100, seed=7)  # resumable


def test_a_detached_layer_gets_no_gradient_and_the_layers_above_do():
    model = pf_model("avg", True, layers=3).train()
    model.detached_layers = frozenset({1})
    b = tiny_batch(batch=4, max_len=9, seed=2)
    out = model(b["input_ids"], b["attention_mask"])
    objective_loss("weighted", out, torch.tensor([0, 1, 2, 0]), False, 1).backward()
    layers = model.adapter.layers
    assert all(p.grad is None for p in layers[0].parameters())
    assert all(p.grad is not None for p in layers[1].parameters() if p.requires_grad)
