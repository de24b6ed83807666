"""Exit modules plug in by name: a head that reads past states, registered from outside the core,
trains and exits for real like the built-in ones; models/ imports no method from the core."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from models.criteria import Entropy, simulate
from models.exit_heads import pool_tokens
from models.exiting import MultiExitConfig, MultiExitModel
from models.registry import HEADS, SCORERS, build_scorer, register_head
from tests.conftest import tiny_backbone, tiny_batch

ROOT = Path(__file__).resolve().parents[2]


class PastMeanHead(nn.Module):
    """Test head: a Linear on the mean of this layer's and every earlier layer's mean-pooled state."""

    reads_past = True

    def __init__(self, hidden_size, num_outputs):
        super().__init__()
        self.classifier = nn.Linear(hidden_size, num_outputs)

    def forward(self, hidden, padding_mask, past):
        state = pool_tokens(hidden, padding_mask, "mean")
        together = torch.stack([*past, state]).mean(0)  # [b, d]
        return self.classifier(together), state

    def flops(self, n_tokens):
        return 2 * self.classifier.in_features * self.classifier.out_features


@pytest.fixture()
def past_mean_head():
    register_head("test_past_mean")(lambda d, c, dropout, pooler, pooling: PastMeanHead(d, c))
    yield "test_past_mean"
    del HEADS["test_past_mean"]


def test_a_registered_head_reading_past_states_exits_for_real_as_simulated(past_mean_head):
    torch.manual_seed(0)
    model = MultiExitModel(tiny_backbone("bert", 4), MultiExitConfig(num_outputs=3, head=past_mean_head)).eval()
    b = tiny_batch(batch=12, max_len=9, seed=3)
    rec = model(b["input_ids"], b["attention_mask"])
    # layer 3's head saw the states of layers 1-3
    manual = model.heads[2].classifier(rec.states[:3].mean(0))
    torch.testing.assert_close(rec.logits[2], manual)
    tau = float(Entropy.score(rec.logits[:-1].detach(), None).median())
    sim_layer, sim_logits = simulate(Entropy(tau), rec.logits)
    real = model.early_exit(b["input_ids"], b["attention_mask"], criterion=Entropy(tau))
    assert 1 < len(set(sim_layer.tolist()))  # rows exit at different layers: compaction is exercised
    assert real.exit_layer.tolist() == sim_layer.tolist()
    torch.testing.assert_close(real.logits, sim_logits, atol=1e-5, rtol=1e-5)


def test_unknown_modules_name_the_registered_ones():
    with pytest.raises(ValueError, match="unknown exit scorer 'nope'; registered: lte, policy"):
        build_scorer("nope", 8, 3)
    with pytest.raises(ValueError, match="unknown exit head kind 'nope'; registered: .*linear"):
        MultiExitModel(tiny_backbone("bert", 2), MultiExitConfig(num_outputs=2, head="nope"))
    assert {"lte", "policy"} <= set(SCORERS)


def test_the_core_imports_no_method_and_models_has_no_import_circle():
    graph = {}
    for path in (ROOT / "models").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("models."):
                deps.add(node.module)
        graph[name] = deps
    core = {"models.exiting", "models.objectives", "models.flops", "models.criteria", "models.registry", "models.exit_heads"}
    methods = {"models.berxit", "models.consistentee", "models.hashee"}
    for module in core:
        assert not graph[module] & methods, f"{module} imports a method module"

    def reaches(start, target, seen=()):
        return any(d == target or (d not in seen and reaches(d, target, (*seen, d))) for d in graph.get(start, ()))

    circles = [m for m in graph if reaches(m, m)]
    assert circles == []
