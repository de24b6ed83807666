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
from models.registry import EXIT_STACKS, SCORERS, ExitStack, build_scorer, register_exit_stack
from tests.conftest import tiny_backbone, tiny_batch

ROOT = Path(__file__).resolve().parents[2]


class PastMeanExits(ExitStack):
    """Test exit stack: exit k is a Linear on the mean of layers 1..k's mean-pooled states,
    kept as a running sum in the stack's memory."""

    carries_memory = True

    def __init__(self, num_layers, hidden_size, num_outputs):
        super().__init__()
        self.classifiers = nn.ModuleList(nn.Linear(hidden_size, num_outputs) for _ in range(num_layers))

    def step(self, layer, hidden, padding, memory, decide=True):
        state = pool_tokens(hidden, padding, "mean")
        memory = {"sum": state if memory is None else memory["sum"] + state}
        return (self.classifiers[layer - 1](memory["sum"] / layer) if decide else None), state, memory

    def flops(self, layer, n_tokens, decide=True):
        return 2 * self.classifiers[0].in_features * self.classifiers[0].out_features if decide else 0

    def exit_parameters(self, layer):
        return self.classifiers[layer - 1].parameters()


@pytest.fixture()
def past_mean_exits():
    register_exit_stack("test_past_mean")(lambda L, d, c, dropout, pooler, pooling: PastMeanExits(L, d, c))
    yield "test_past_mean"
    del EXIT_STACKS["test_past_mean"]


def test_a_registered_exit_stack_reading_past_states_exits_for_real_as_simulated(past_mean_exits):
    torch.manual_seed(0)
    model = MultiExitModel(tiny_backbone("bert", 4), MultiExitConfig(num_outputs=3, head=past_mean_exits)).eval()
    b = tiny_batch(batch=12, max_len=9, seed=3)
    rec = model(b["input_ids"], b["attention_mask"])
    # layer 3's exit saw the states of layers 1-3
    manual = model.heads.classifiers[2](rec.states[:3].mean(0))
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
    methods = {"models.berxit", "models.consistentee", "models.hashee", "models.past_future"}
    for module in core:
        assert not graph[module] & methods, f"{module} imports a method module"

    def reaches(start, target, seen=()):
        return any(d == target or (d not in seen and reaches(d, target, (*seen, d))) for d in graph.get(start, ()))

    circles = [m for m in graph if reaches(m, m)]
    assert circles == []
