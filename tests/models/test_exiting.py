"""The exit loop: layer convention, real early exit == offline simulation, compaction."""

import pytest
import torch
from torch.testing import assert_close

from models.berxit import LearnedExit
from models.criteria import CRITERIA, Entropy, MaxProb, Patience, Static, simulate
from models.exiting import MultiExitConfig, MultiExitModel
from tests.conftest import tiny_backbone, tiny_batch, tiny_model


def test_exit_k_state_equals_hf_hidden_states_k(family):
    model = tiny_model(family, layers=3)
    b = tiny_batch()
    seen = []
    for head in model.heads:  # heads are distinct modules even when layers are shared (ALBERT)
        head.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    model(b["input_ids"], b["attention_mask"])
    hf = model.backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
    assert len(seen) == 3
    for k in range(1, 4):
        mask = b["attention_mask"].bool()
        assert_close(seen[k - 1][mask], hf.hidden_states[k][mask], atol=1e-5, rtol=1e-4)


def test_full_model_path_equals_last_exit_of_recording_pass(family):
    model = tiny_model(family, layers=3)
    b = tiny_batch()
    full = model.early_exit(b["input_ids"], b["attention_mask"], criterion=None)
    rec = model(b["input_ids"], b["attention_mask"])
    assert (full.exit_layer == 3).all()
    assert_close(full.logits, rec.logits[-1], atol=1e-5, rtol=1e-4)


def _mixed_threshold(criterion_cls, rec):
    """A threshold that makes rows exit at different layers (median of the score)."""
    grid = criterion_cls.sweep(rec.logits, rec.scores, 9)
    return grid[len(grid) // 2]


@pytest.mark.parametrize("name", ["maxprob", "entropy", "patience", "lte", "static"])
@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_real_early_exit_equals_offline_simulation(name, batch_size):
    model = tiny_model("bert", layers=4, lte=True, seed=3)
    b = tiny_batch(batch=16, max_len=11, seed=5)
    rec = model(b["input_ids"], b["attention_mask"])
    crit = CRITERIA[name](_mixed_threshold(CRITERIA[name], rec) if name not in ("patience", "static") else 1 if name == "patience" else 2)
    sim_layer, sim_logits = simulate(crit, rec.logits, rec.scores)
    layers, logits = [], []
    for start in range(0, 16, batch_size):
        sl = slice(start, start + batch_size)
        out = model.early_exit(b["input_ids"][sl], b["attention_mask"][sl], criterion=crit)
        layers.append(out.exit_layer)
        logits.append(out.logits)
    assert torch.equal(torch.cat(layers), sim_layer)
    assert_close(torch.cat(logits), sim_logits, atol=1e-5, rtol=1e-4)
    assert torch.equal(torch.cat(logits).argmax(-1), sim_logits.argmax(-1))


def test_regression_early_exit_equals_simulation():
    model = tiny_model("bert", layers=4, lte=True, regression=True, seed=2)
    b = tiny_batch(batch=12, regression=True)
    rec = model(b["input_ids"], b["attention_mask"])
    for crit in (Patience(1, delta=float(rec.logits.std().detach())), LearnedExit(float(rec.scores["lte"].median().detach()))):
        sim_layer, _ = simulate(crit, rec.logits, rec.scores)
        out = model.early_exit(b["input_ids"], b["attention_mask"], criterion=crit)
        assert torch.equal(out.exit_layer, sim_layer)


@pytest.mark.parametrize("head,options", [
    ("linear", {}), ("pooler", {}), ("mha", {}),
    ("past_future", {"past": "concat", "future": True, "gate": "scalar"}),
    ("past_future", {"past": "ensemble", "future": False, "gate": "scalar"}),
    ("leco", {"architecture": None, "inner_size": 8}),  # the search's mixed exits
])
def test_regression_exits_start_at_the_label_mean(head, options):
    """``start_regression_at`` sets the bias of the layer each exit predicts with to the labels'
    mean: once those layers' weights are zeroed, every exit of every row predicts exactly it."""
    torch.manual_seed(0)
    config = MultiExitConfig(num_outputs=1, regression=True, head=head, head_dropout=0.0, pooling="mean",
                             head_options=options)
    model = MultiExitModel(tiny_backbone("bert", layers=3), config).eval()
    b = tiny_batch(regression=True)
    model.start_regression_at(torch.tensor([1.7, 2.2, 4.2]))  # mean 2.7
    with torch.no_grad():
        for layer in model.heads.output_layers():
            layer.weight.zero_()
    logits = model(b["input_ids"], b["attention_mask"]).logits  # [L, b, 1]
    assert logits.shape == (3, 6, 1)
    assert_close(logits, torch.full_like(logits, 2.7))


def test_compaction_runs_later_layers_only_on_active_rows():
    model = tiny_model("bert", layers=4, seed=1)
    b = tiny_batch(batch=10, max_len=9)
    rows_seen = []
    for layer in model.adapter.layers:  # BERT layers are distinct modules
        layer.register_forward_hook(lambda mod, args, out: rows_seen.append(args[0].shape[0]))
    rec = model(b["input_ids"], b["attention_mask"])
    rows_seen.clear()
    crit = MaxProb(_mixed_threshold(MaxProb, rec))
    out = model.early_exit(b["input_ids"], b["attention_mask"], criterion=crit)
    expected = [int((out.exit_layer >= k).sum()) for k in range(1, 5)]
    expected = [e for e in expected if e > 0]
    assert rows_seen == expected
    assert expected[0] > expected[-1], "threshold should make some rows exit early"


def test_lte_criterion_without_lte_module_is_a_clear_error():
    model = tiny_model("bert", lte=False)
    b = tiny_batch()
    with pytest.raises(ValueError, match="LTE"):
        model.early_exit(b["input_ids"], b["attention_mask"], criterion=LearnedExit(0.5))


def test_static_exit_k_runs_k_layers_and_matches_layerwise_head():
    model = tiny_model("distilbert", layers=3)
    b = tiny_batch()
    rec = model(b["input_ids"], b["attention_mask"])
    out = model.early_exit(b["input_ids"], b["attention_mask"], criterion=Static(2))
    assert (out.exit_layer == 2).all()
    assert_close(out.logits, rec.logits[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("head", ["linear", "pooler", "mha"])
def test_every_head_kind_gives_same_real_and_simulated_exits(head):
    model = tiny_model("roberta", layers=3, head=head, lte=True, seed=4)
    b = tiny_batch(batch=8)
    rec = model(b["input_ids"], b["attention_mask"])
    crit = Entropy(_mixed_threshold(Entropy, rec))
    sim_layer, _ = simulate(crit, rec.logits, rec.scores)
    assert torch.equal(model.early_exit(b["input_ids"], b["attention_mask"], criterion=crit).exit_layer, sim_layer)


def test_mean_pooling_ignores_padding_and_keeps_real_equal_to_simulated():
    model = tiny_model("bert", layers=3, lte=True, seed=6)
    model.heads = type(model.heads)(
        __import__("models.exit_heads", fromlist=["build_exit_heads"]).build_exit_heads("linear", 3, 32, 3, 0.0, None, "mean"))
    b = tiny_batch(batch=6, max_len=9)
    short = b["attention_mask"][1].sum().item()
    alone = model(b["input_ids"][1:2, :short], b["attention_mask"][1:2, :short])
    padded = model(b["input_ids"], b["attention_mask"])
    assert_close(alone.logits[:, 0], padded.logits[:, 1], atol=1e-5, rtol=1e-4)  # padding does not leak in
    crit = Entropy(_mixed_threshold(Entropy, padded))
    sim_layer, _ = simulate(crit, padded.logits, padded.scores)
    assert torch.equal(model.early_exit(b["input_ids"], b["attention_mask"], criterion=crit).exit_layer, sim_layer)
