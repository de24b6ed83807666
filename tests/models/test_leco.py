"""LECO (models/leco.py) on tiny models: the mixed op, the DARTS alternation, derivation with
``null``, padding, FLOPs, and COBEE (equations, real exit == simulated exit)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.criteria import simulate
from models.exiting import MultiExitConfig, MultiExitModel
from models.flops import instance_flops
from models.objectives import objective_loss
from models.leco import (ENCODER_OPS, POOLING_OPS, SEARCH_SPACE, Choice, Cobee, LecoExit, Pooling, SelfAttention,
                         check_architecture, derive_architecture, search_epoch, split_halves)
from models.training import build_optimizer, linear_schedule
from tests.conftest import tiny_backbone, tiny_batch

DERIVED = [
    {"activation_1": "gelu", "encoder_1": "conv_3", "encoder_2": "null", "pooling": "max", "activation_2": "tanh"},
    {"activation_1": "identity", "encoder_1": "mha_2", "encoder_2": "skip", "pooling": "sa", "activation_2": "swish"},
    {"activation_1": "relu", "encoder_1": "null", "encoder_2": "null", "pooling": "avg", "activation_2": "leaky_relu"},
    {"activation_1": "tanh", "encoder_1": "conv_5", "encoder_2": "mha_8", "pooling": "cls", "activation_2": "identity"},
]


def leco_model(architecture=None, layers=4, num_outputs=3, seed=0, inner_size=8, scorer=None):
    torch.manual_seed(seed)
    config = MultiExitConfig(num_outputs=num_outputs, head="leco", head_dropout=0.0, pooling="mean", scorer=scorer,
                             head_options={"architecture": architecture, "inner_size": inner_size})
    return MultiExitModel(tiny_backbone("bert", layers, seed=seed), config).eval()


def randomise_alphas(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for alpha in model.heads.architecture_parameters():
            alpha.copy_(torch.randn(alpha.shape, generator=g))


@pytest.mark.parametrize("choice", list(SEARCH_SPACE))
def test_the_mixed_op_equals_the_chosen_op_when_its_weights_are_one_hot(choice):
    torch.manual_seed(0)
    mixed = Choice(choice, SEARCH_SPACE[choice], 8)
    x = torch.randn(3, 5, 8) if choice != "activation_2" else torch.randn(3, 8)
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    for i, name in enumerate(SEARCH_SPACE[choice]):
        one_hot = torch.nn.functional.one_hot(torch.tensor(i), len(SEARCH_SPACE[choice])).float()
        torch.testing.assert_close(mixed(x, padding, one_hot), mixed.ops[i](x, padding))
    # the search weights are softmax(alpha): a mixture, not any single op
    with torch.no_grad():
        mixed.alpha.copy_(torch.arange(len(mixed.candidates), dtype=torch.float))
    w = mixed.alpha.softmax(-1)
    expected = sum(w[i] * op(x, padding) for i, op in enumerate(mixed.ops))
    torch.testing.assert_close(mixed(x, padding), expected)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_a_search_step_moves_the_architecture_only_on_d2_and_the_weights_only_on_d1():
    model = leco_model(layers=2)
    alphas = model.heads.architecture_parameters()
    assert len(alphas) == 2 * len(SEARCH_SPACE)
    alpha_ids = {id(a) for a in alphas}
    weights = [p for p in model.parameters() if id(p) not in alpha_ids]
    weight_opt = build_optimizer(model, 1e-2, 0.01, leave_out=alphas)
    arch_opt = torch.optim.AdamW(alphas, lr=1e-1, weight_decay=1e-3)
    scheduler = linear_schedule(weight_opt, 0, 10)
    d1 = [tiny_batch(batch=4, seed=s) for s in (1, 2)]
    d2 = [tiny_batch(batch=4, seed=s) for s in (3, 4)]
    for b in d1 + d2:
        b["labels"] = b["labels"] % 3
    seen, steps = [], []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))

    def gradients_of(batch, params):
        """The gradient of the joint loss of ``batch`` alone, for ``params`` (a fresh copy of the model)."""
        twin = copy.deepcopy(model)
        twin.zero_grad(set_to_none=True)
        out = twin(batch["input_ids"], batch["attention_mask"])
        objective_loss("joint", out, batch["labels"], False, 1).backward()
        named = dict(twin.named_parameters())
        return {name: named[name].grad for name in params}

    def watch(optimizer, name):
        step = optimizer.step

        def watched(*args, **kwargs):
            batch = next(b for b in d1 + d2 if seen[-1] is b["input_ids"])
            mine = [n for n, p in model.named_parameters() if any(p is q for g in optimizer.param_groups for q in g["params"])]
            expected = gradients_of(batch, mine)
            grads = dict(model.named_parameters())
            for n in mine:  # the step sees its own batch's gradient only (the weights' are clipped at norm 1)
                if expected[n] is not None and grads[n].grad is not None:
                    scale = 1.0 if name == "architecture" else min(1.0, 1.0 / torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(g) for g in expected.values() if g is not None])).item())
                    torch.testing.assert_close(grads[n].grad, expected[n] * scale, atol=1e-6, rtol=1e-4)
            before = [p.detach().clone() for p in model.parameters()]
            out = step(*args, **kwargs)
            moved = {id(p) for p, b in zip(model.parameters(), before) if not torch.equal(p, b)}
            batch = "d1" if any(seen[-1] is b["input_ids"] for b in d1) else "d2"
            steps.append((name, batch, bool(moved & alpha_ids), bool(moved - alpha_ids)))
            return out
        optimizer.step = watched

    watch(weight_opt, "weights")
    watch(arch_opt, "architecture")
    model.train()
    search_epoch(model, d1, d2, weight_opt, arch_opt, scheduler)
    # alternation D2 -> D1; each step moves only its own parameters
    assert steps == [("architecture", "d2", True, False), ("weights", "d1", False, True)] * 2
    assert all(p.grad is None for p in model.parameters())  # nothing leaks into the next step
    assert {id(p) for g in weight_opt.param_groups for p in g["params"]} == {id(p) for p in weights}


def test_split_halves_is_a_seeded_disjoint_cover_that_changes_per_epoch():
    d1, d2 = split_halves(11, 7)
    assert sorted(d1.tolist() + d2.tolist()) == list(range(11)) and len(d1) == 5
    again = split_halves(11, 7)
    assert (again[0] == d1).all() and (again[1] == d2).all()
    assert not (split_halves(11, 8)[0].tolist() == d1.tolist())


def test_derivation_picks_the_argmax_and_null_may_win_a_slot():
    model = leco_model(layers=2)
    weights = model.heads.architecture_weights()
    weights[0]["encoder_1"] = {op: (0.9 if op == "null" else 0.1 / 7) for op in ENCODER_OPS}
    weights[0]["encoder_2"] = {op: (0.3 if op == "mha_4" else 0.1) for op in ENCODER_OPS}
    weights[0]["pooling"] = {"cls": 0.1, "avg": 0.2, "max": 0.6, "sa": 0.1}
    weights[1]["encoder_1"] = {op: (0.5 if op == "null" else 0.05) for op in ENCODER_OPS}
    weights[1]["encoder_2"] = {op: (0.5 if op == "null" else 0.05) for op in ENCODER_OPS}
    derived = derive_architecture(weights)
    assert derived[0]["encoder_1"] == "null" and derived[0]["encoder_2"] == "mha_4" and derived[0]["pooling"] == "max"
    assert derived[0]["activation_1"] == "relu"  # uniform weights: the first candidate
    built = leco_model(derived, layers=2)
    assert list(built.heads[0].encoders) == ["encoder_2"]  # a null slot is removed
    assert len(built.heads[1].encoders) == 0  # both null: pooling reads the activation
    assert built.heads.architecture_parameters() == []
    # with both slots null the exit is pooling(activation(down(h)))
    exit_, batch = built.heads[1], tiny_batch(batch=3)
    hidden = torch.randn(3, batch["input_ids"].shape[1], 32)
    x = exit_.activation_1(exit_.down(hidden), batch["attention_mask"])
    expected = exit_.classifier(exit_.activation_2(exit_.pooling(x, batch["attention_mask"]), None))
    torch.testing.assert_close(exit_(hidden, batch["attention_mask"])[0], expected)
    # architecture_weights of derived exits: weight 1 on the op; removed slots read as null
    assert built.heads.architecture_weights()[1]["encoder_1"] == {"null": 1.0}


@pytest.mark.parametrize("architecture", [None, DERIVED], ids=["search", "derived"])
def test_a_padded_row_gives_the_same_exit_output_as_the_row_unpadded(architecture):
    model = leco_model(architecture)
    randomise_alphas(model)
    batch = tiny_batch(batch=5, max_len=9)
    full = model(batch["input_ids"], batch["attention_mask"])
    for row in range(5):
        n = int(batch["attention_mask"][row].sum())
        alone = model(batch["input_ids"][row:row + 1, :n], batch["attention_mask"][row:row + 1, :n])
        torch.testing.assert_close(alone.logits[:, 0], full.logits[:, row], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("op", [*ENCODER_OPS, *POOLING_OPS])
def test_every_op_ignores_padding(op):
    torch.manual_seed(0)
    choice = "pooling" if op in POOLING_OPS else "encoder_1"
    cell = Choice(choice, [op], 8)
    x = torch.randn(1, 4, 8)
    padded = torch.cat([x, torch.randn(1, 3, 8) * 100], 1)
    out_short = cell(x, torch.ones(1, 4, dtype=torch.long))
    out_long = cell(padded, torch.tensor([[1, 1, 1, 1, 0, 0, 0]]))
    torch.testing.assert_close(out_long if choice == "pooling" else out_long[:, :4], out_short, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("architecture", [None, DERIVED], ids=["search", "derived"])
def test_exit_flops_match_flop_counter_mode(architecture):
    model = leco_model(architecture)
    randomise_alphas(model)
    one = tiny_batch(batch=1, max_len=7)
    hidden = torch.randn(1, 7, 32)
    for exit_ in model.heads:
        with FlopCounterMode(display=False) as counter:
            exit_(hidden, one["attention_mask"])
        assert exit_.flops(7) == counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        out = model.early_exit(one["input_ids"], one["attention_mask"], criterion=Cobee(-1.0))  # never fires
    assert out.exit_layer.item() == 4 and instance_flops(model, 7, 4, Cobee(-1.0)) == counter.get_total_flops()


def test_cobee_counts_calm_layers_and_resets_as_eqs_6_and_7_say():
    # one row, 3 classes; probabilities per layer chosen by hand
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.62, 0.2, 0.18], [0.3, 0.6, 0.1], [0.31, 0.59, 0.1]])
    logits = probs.log().unsqueeze(1)  # [L, 1, c]
    # di at layers 2..5: |0.6-0.5| = .1, |.62-.6| = .02, k* = 1: |.6-.2| = .4, k* = 1: |.59-.6| = .01
    torch.testing.assert_close(Cobee.disagreement(probs[1:], probs[:-1]), torch.tensor([0.1, 0.02, 0.4, 0.01]))
    crit, state = Cobee(0.05, patience=1), Cobee(0.05).init_state(1, "cpu")
    counts = []
    for k in range(1, 6):
        fire, state = crit.step(k, logits[k - 1], None, state)
        counts.append(int(state["count"]))
    assert counts == [0, 0, 1, 0, 1]  # 0 at layer 1; +1 when di < tau, reset otherwise
    assert simulate(Cobee(0.05, patience=1), logits)[0].item() == 3
    assert simulate(Cobee(0.15, patience=2), logits)[0].item() == 3  # .1 and .02 both < .15
    assert simulate(Cobee(0.05, patience=2), logits)[0].item() == 5  # never two calm layers in a row: last layer


@pytest.mark.parametrize("patience", [1, 2])
def test_cobee_real_early_exit_equals_its_simulation_row_by_row(patience):
    model = leco_model(DERIVED, seed=3)
    batch = tiny_batch(batch=12, max_len=9, seed=5)
    rec = model(batch["input_ids"], batch["attention_mask"])
    grid = Cobee.sweep(rec.logits, {}, 9)
    spread = 0
    for tau in grid:
        crit = Cobee(tau, patience=patience)
        real = model.early_exit(batch["input_ids"], batch["attention_mask"], criterion=crit)
        sim_layer, sim_logits = simulate(crit, rec.logits)
        assert torch.equal(real.exit_layer, sim_layer)
        torch.testing.assert_close(real.logits, sim_logits, atol=1e-5, rtol=1e-4)
        spread = max(spread, len(set(sim_layer.tolist())))
    assert spread >= 2  # some threshold exits rows at different layers (compaction exercised)
    assert grid[-1] > Cobee.disagreement(rec.logits[1:-1].softmax(-1), rec.logits[:-2].softmax(-1)).max()


@pytest.mark.parametrize("bad, message", [
    ({**DERIVED[0], "encoder_1": "conv_7"}, r"layer 1: encoder_1 = 'conv_7'.*choose among conv_1"),
    ({**DERIVED[0], "pool": "max"}, r"layer 1: unknown key\(s\) 'pool'"),
    ({k: v for k, v in DERIVED[0].items() if k != "pooling"}, r"layer 1: missing key\(s\) 'pooling'"),
])
def test_bad_architectures_name_the_layer_and_key(bad, message):
    with pytest.raises(ValueError, match=message):
        check_architecture([bad, *DERIVED[1:]], 4)
    with pytest.raises(ValueError, match=r"expected one cell per layer \(4 layers\), got 3"):
        check_architecture(DERIVED[:3], 4)


def test_an_inner_size_that_does_not_divide_by_the_head_count_is_refused():
    with pytest.raises(ValueError, match=r"inner_size \(d_e\) 12 does not divide into mha_8's 8 heads"):
        LecoExit(32, 2, 0.0, {k: [v] for k, v in DERIVED[3].items()}, 12, "mean")


def test_every_layer_has_its_own_architecture_weights():
    model = leco_model(layers=3)
    per_layer = [[c.alpha for c in exit_.choices().values()] for exit_ in model.heads]
    assert len({id(a) for layer in per_layer for a in layer}) == 3 * len(SEARCH_SPACE)
    with torch.no_grad():
        per_layer[0][0][0] += 5.0
    weights = model.heads.architecture_weights()
    assert weights[0]["activation_1"]["relu"] > 0.9 and weights[1]["activation_1"]["relu"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("heads", [2, 4, 8])
def test_mha_k_splits_d_e_into_k_heads_of_size_d_e_over_k(heads):
    torch.manual_seed(0)
    op = SelfAttention(16, heads)
    x, padding = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    q, k, v = op.qkv(x).chunk(3, -1)
    split = [t.view(2, 5, heads, 16 // heads).transpose(1, 2) for t in (q, k, v)]
    keep = padding[:, None, None, :].bool()
    attended = F.scaled_dot_product_attention(*split, attn_mask=keep).transpose(1, 2).reshape(2, 5, 16)
    expected = op.out(attended) * padding.unsqueeze(-1)
    torch.testing.assert_close(op(x, padding), expected, atol=1e-5, rtol=1e-4)


def test_each_pooling_op_pools_what_its_name_says():
    torch.manual_seed(0)
    x, padding = torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    real = [x[0], x[1, :2]]
    pooled = {kind: Pooling(8, kind) for kind in POOLING_OPS}
    torch.testing.assert_close(pooled["cls"](x, padding), x[:, 0])
    torch.testing.assert_close(pooled["avg"](x, padding), torch.stack([r.mean(0) for r in real]))
    torch.testing.assert_close(pooled["max"](x, padding), torch.stack([r.amax(0) for r in real]))
    sa = pooled["sa"]
    expected = torch.stack([(sa.score(r).softmax(0) * r).sum(0) for r in real])
    torch.testing.assert_close(sa(x, padding), expected)


def test_cobee_needs_a_disagreement_strictly_below_tau():
    logits = torch.tensor([[[0.3, -0.2]], [[1.1, -0.4]], [[0.2, 0.5]]])  # [L, 1, c]
    probs = logits.softmax(-1)
    tau = float(Cobee.disagreement(probs[1], probs[0]))
    _, state = Cobee(tau).step(1, logits[0], None, Cobee(tau).init_state(1, "cpu"))
    fire, state = Cobee(tau).step(2, logits[1], None, state)
    assert not fire.item() and state["count"].item() == 0  # di == tau is not calm
    fire, _ = Cobee(tau * 1.0001).step(2, logits[1], None, {"count": torch.zeros(1, dtype=torch.long), "previous": probs[0]})
    assert fire.item()


def test_cobee_sweep_reads_the_layers_that_can_exit_early():
    # layer L disagrees wildly with layer L-1; only layers 2..L-1 can exit before the forced last exit
    probs = torch.tensor([[0.6, 0.4], [0.62, 0.38], [0.65, 0.35], [0.01, 0.99]]).unsqueeze(1).repeat(1, 3, 1)
    grid = Cobee.sweep(probs.log(), {}, 11)
    assert max(grid) == pytest.approx(0.03 + 1e-6, abs=1e-6)
