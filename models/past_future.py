"""Global Past-Future early exit (Liao et al., 2021; ``past_future.md``, METHODS.md section 4).

Every exit k predicts from a merged state z_k that combines all past states and imitated
future states, registered as the exit stack ``past_future`` (``models/registry.py``):

    s_k     = tanh(W_k pool(h_k) + b_k)                  per-layer pooler (the paper's "state")
    s_p     = G(s_1..s_k)                                Eq. 1, ``past`` strategy
    s^_j    = Learner^j(s_k) = tanh(W_j s_k + b_j)       Eq. 2, j = k+1..L
    s_f     = G_f(s^_{k+1..L})                           Eq. 6, the same strategy kind
    alpha   = sigmoid(Linear(s_p))                       Eq. 7, ``gate``: scalar or per-dimension
    z_k     = alpha s_p + (1 - alpha) s_f;  z_L = s_p    Eq. 8
    logits  = Linear_k(dropout(z_k))                     Eq. 10 (softmax), exit by entropy (Eq. 14)
    L_cos   = mean_{k<L} mean_{j>k} 1 - cos(Learner^j(stopgrad(s_k)), stopgrad(s_j))   Eqs. 3-5
    L       = weighted CE (w_k = k / sum j) + L_cos      Eqs. 9-13 (``objective="weighted"``)

Past strategies G: ``max``, ``avg``, ``attn`` (query s_k; keys and values s_1..s_k; scaled dot
product, no parameters), ``concat`` (the k states concatenated, one Linear(k d, d) per exit
position), ``lstm`` (one LSTM cell run incrementally: exit k costs one step, not k), and the
naive ``vote`` (majority of the per-layer labels so far) and ``ensemble`` (mean of the
per-layer probabilities so far) baselines, whose per-layer heads are trained, not the vote.
``future=False`` is the past-only model (z_k = s_p).

Running past aggregates live in the exit stack's per-row memory (running max, running sum,
the stacked states, the LSTM's (h, c), the summed votes or probabilities): real early exit
updates them once per layer and row-selects them when it compacts the batch.

Choices the paper leaves open (stated in the README too):

- G_f uses its own parameters (a second LSTM started from zeros, one Linear((L-k) d, d) per
  exit for ``concat``); ``attn``'s future query is the real current state s_k.
- One gate Linear, shared by the exits (the paper speaks of "a linear feed forward layer").
- Learners: one per target layer j = 2..L, shared across source layers (METHODS.md); L_cos
  averages exits k = 1..L-1 (the paper's Eq. 5 runs over 2..n, which leaves L_cos^n empty).
- Past states are not detached (the reference code detaches them; the paper does not).
- L_cos trains the learners only: both the target s_j and the learner's input s_k are detached
  in it (the prediction path z_k -> CE still trains s_k through the learners). METHODS.md
  detaches the targets; with the sources left attached, as in the reference code, the
  imitation loss collapsed training here: ``max`` with the future on SST-2 (1,500 training
  rows, 1 epoch) reached 50.7 dev accuracy at the last exit, chance, against 76.2 with
  detached sources and 76.7 for ``max`` without the future (74.1 vs 80.7 past-only at the
  default budget).
- The pooler reads ``pooling`` (``cls`` in the paper; ``mean`` for MiniLM, whose early [CLS]
  states are constant, see ``models/exit_heads.py``), initialised from the backbone's
  pretrained pooler where it has one.
- ``vote`` returns the log of add-one smoothed vote shares, (n_c + 1) / (k + C), as logits, so
  the entropy criterion reads how many layers agree: a unanimous vote at layer 1 is less sure
  than one at layer 3 (raw shares would make every layer-1 vote unanimous and leave entropy
  only the 1x and L x operating points). The argmax is the majority label (ties: lowest
  class index). ``vote`` needs classes. ``ensemble`` returns log mean probabilities (floored).
- Each exit has its own classifier; learners start from PyTorch's default Linear init
  (Kaiming uniform), the reference code from N(0, 0.02); L = L_ce + L_cos with no factor
  (METHODS.md; the reference code halves the sum).
- Regression (the paper has classification tasks only): squared error, patience exits, and
  outputs that start at the training labels' mean like every regression exit
  (``MultiExitModel.start_regression_at``; from PyTorch's near-0 default bias, the last exit
  reached 76.2 dev on STS-B instead of 84.3).
- Layer freezing (section 3.4) is ``models.training.stochastic_freeze`` (bottom K layers, p
  decaying 1 -> 0 over optimizer steps, as METHODS.md fixes it; the paper's text decays p over
  depth instead).

Shape notation: L = layers (= exits), b = batch, s = sequence, d = hidden, c = outputs,
m = number of states aggregated.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ModelSpecError
from models.exit_heads import pool_tokens
from models.registry import ExitStack, register_exit_stack

PAST_STRATEGIES = ("max", "avg", "attn", "concat", "lstm", "vote", "ensemble")
NAIVE = ("vote", "ensemble")
GATES = ("scalar", "vector")
PROBABILITY_FLOOR = 1e-12


def attend(query: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product pooling: ``query [b, d]`` over ``states [b, m, d]`` -> ``[b, d]``."""
    scores = (states @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(states.shape[-1])  # [b, m]
    return (scores.softmax(-1).unsqueeze(1) @ states).squeeze(1)


class Aggregator(nn.Module):
    """One strategy G. ``add``/``read`` aggregate the past incrementally through a memory dict;
    ``over`` aggregates a whole sequence at once (the imitated future).

    ``slots[k - 1]`` is the number of states a ``concat`` Linear reads at exit k.
    """

    def __init__(self, kind: str, hidden_size: int, slots: list[int]):
        super().__init__()
        self.kind = kind
        d = hidden_size
        if kind == "concat":
            self.project = nn.ModuleList(nn.Linear(m * d, d) for m in slots)
        elif kind == "lstm":
            self.cell = nn.LSTMCell(d, d)

    def add(self, memory: dict, state: torch.Tensor) -> dict:
        """Fold ``state [b, d]`` into the running past."""
        if self.kind == "max":
            return {"max": state if "max" not in memory else torch.maximum(memory["max"], state)}
        if self.kind == "avg":
            return {"sum": state if "sum" not in memory else memory["sum"] + state}
        if self.kind in ("attn", "concat"):
            step = state.unsqueeze(1)
            return {"states": step if "states" not in memory else torch.cat([memory["states"], step], 1)}
        carry = (memory["h"], memory["c"]) if "h" in memory else None
        h, c = self.cell(state, carry)
        return {"h": h, "c": c}

    def read(self, memory: dict, layer: int, query: torch.Tensor) -> torch.Tensor:
        """s_p at exit ``layer`` from the memory of layers 1..layer."""
        if self.kind == "max":
            return memory["max"]
        if self.kind == "avg":
            return memory["sum"] / layer
        if self.kind == "attn":
            return attend(query, memory["states"])
        if self.kind == "concat":
            return self.project[layer - 1](memory["states"].flatten(1))
        return memory["h"]

    def over(self, states: torch.Tensor, layer: int, query: torch.Tensor) -> torch.Tensor:
        """G over ``states [b, m, d]`` at exit ``layer``."""
        if self.kind == "max":
            return states.amax(1)
        if self.kind == "avg":
            return states.mean(1)
        if self.kind == "attn":
            return attend(query, states)
        if self.kind == "concat":
            return self.project[layer - 1](states.flatten(1))
        h = c = states.new_zeros(states.shape[0], states.shape[-1])
        for t in range(states.shape[1]):
            h, c = self.cell(states[:, t], (h, c))
        return h

    def flops_add(self, d: int) -> int:
        return 16 * d * d if self.kind == "lstm" else 0  # 4 gates x (input + hidden) matmuls

    def flops_read(self, m: int, d: int) -> int:
        """Reading an aggregate of ``m`` states (past read, or ``over`` for the future)."""
        if self.kind == "attn":
            return 4 * m * d
        if self.kind == "concat":
            return 2 * m * d * d
        return 0


class PastFutureExits(ExitStack):
    """The L Past-Future exits as one stack (see the module docstring for the equations).

    Args:
        num_layers: L.
        hidden_size: d.
        num_outputs: c (1 for regression).
        past: one of ``PAST_STRATEGIES``.
        future: add the imitated future state through the gate (not for ``vote``/``ensemble``).
        gate: ``scalar`` (alpha ``[b, 1]``) or ``vector`` (alpha ``[b, d]``).
    """

    carries_memory = True

    def __init__(self, num_layers: int, hidden_size: int, num_outputs: int, dropout: float = 0.1,
                 pretrained_pooler: nn.Linear | None = None, pooling: str = "cls", past: str = "concat",
                 future: bool = True, gate: str = "scalar"):
        super().__init__()
        if past not in PAST_STRATEGIES:
            raise ModelSpecError(f"unknown past strategy {past!r}; choose one of {', '.join(PAST_STRATEGIES)}")
        if gate not in GATES:
            raise ModelSpecError(f"unknown gate {gate!r}; choose one of {', '.join(GATES)}")
        if future and past in NAIVE:
            raise ModelSpecError(f"the naive {past!r} baseline combines per-layer predictions and has no future part; "
                                 f"set future to false")
        if past == "vote" and num_outputs == 1:
            raise ModelSpecError("the 'vote' strategy needs class labels; use 'ensemble' (mean prediction) for regression")
        L, d = num_layers, hidden_size
        self.num_layers, self.hidden_size, self.num_outputs = L, d, num_outputs
        self.past, self.future, self.gate_kind, self.pooling = past, future, gate, pooling
        self.poolers = nn.ModuleList(copy.deepcopy(pretrained_pooler) if pretrained_pooler is not None
                                     else nn.Linear(d, d) for _ in range(L))
        self.dropout = nn.Dropout(dropout)
        self.classifiers = nn.ModuleList(nn.Linear(d, num_outputs) for _ in range(L))
        if past not in NAIVE:
            self.aggregate = Aggregator(past, d, slots=list(range(1, L + 1)))
        if future:
            # learner for target layer j is row j - 2 (targets 2..L)
            self.learner_weight = nn.Parameter(torch.empty(L - 1, d, d))
            self.learner_bias = nn.Parameter(torch.zeros(L - 1, d))
            nn.init.kaiming_uniform_(self.learner_weight.view(-1, d), a=math.sqrt(5))
            self.future_aggregate = Aggregator(past, d, slots=[L - k for k in range(1, L)])
            self.gate = nn.Linear(d, 1 if gate == "scalar" else d)

    # ---- equations --------------------------------------------------------------------------

    def state(self, layer: int, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """s_k = tanh(pooler_k(pool(h_k))), ``[b, d]``."""
        return torch.tanh(self.poolers[layer - 1](pool_tokens(hidden, padding, self.pooling)))

    def imitate(self, state: torch.Tensor, layer: int) -> torch.Tensor:
        """Eq. 2: s^_j = tanh(W_j s_k + b_j) for j = layer+1..L, ``[b, L - layer, d]``."""
        weight, bias = self.learner_weight[layer - 1:], self.learner_bias[layer - 1:]  # targets layer+1..L
        return torch.tanh(torch.einsum("bd,jed->bje", state, weight) + bias)

    def merge(self, past_state: torch.Tensor, state: torch.Tensor, layer: int) -> torch.Tensor:
        """Eqs. 6-8: z_k from s_p and the imitated future; z_L = s_p."""
        if not self.future or layer == self.num_layers:
            return past_state
        future_state = self.future_aggregate.over(self.imitate(state, layer), layer, state)
        alpha = torch.sigmoid(self.gate(past_state))
        return alpha * past_state + (1 - alpha) * future_state

    def local_logits(self, layer: int, state: torch.Tensor) -> torch.Tensor:
        return self.classifiers[layer - 1](self.dropout(state))

    def combine_votes(self, memory: dict, layer: int) -> torch.Tensor:
        """Naive baselines: the vote shares or mean probabilities of layers 1..layer as logits."""
        if self.past == "vote":
            return ((memory["sum"] + 1) / (layer + self.num_outputs)).log()
        if self.num_outputs == 1:
            return memory["sum"] / layer
        return (memory["sum"] / layer).clamp_min(PROBABILITY_FLOOR).log()

    # ---- ExitStack ----------------------------------------------------------------------------

    def step(self, layer, hidden, padding, memory, decide=True):
        memory = memory or {}
        state = self.state(layer, hidden, padding)
        if self.past in NAIVE:
            local = self.local_logits(layer, state)
            if self.past == "vote":
                vote = F.one_hot(local.argmax(-1), self.num_outputs).to(local.dtype)
            else:
                vote = local if self.num_outputs == 1 else local.softmax(-1)
            memory = {"sum": vote if "sum" not in memory else memory["sum"] + vote}
            return (self.combine_votes(memory, layer) if decide else None), state, memory
        memory = self.aggregate.add(memory, state)
        if not decide:
            return None, state, memory
        past_state = self.aggregate.read(memory, layer, state)
        return self.local_logits(layer, self.merge(past_state, state, layer)), state, memory

    def flops(self, layer, n_tokens, decide=True):
        d, c, L = self.hidden_size, self.num_outputs, self.num_layers
        total = 2 * d * d  # pooler
        if self.past in NAIVE:
            return total + 2 * d * c  # the local head runs at every layer: its vote is memory
        total += self.aggregate.flops_add(d)
        if not decide:
            return total
        total += self.aggregate.flops_read(layer, d) + 2 * d * c
        if self.future and layer < L:
            m = L - layer
            total += 2 * m * d * d  # learners
            total += self.future_aggregate.flops_read(m, d) + m * self.future_aggregate.flops_add(d)
            total += 2 * d * self.gate.out_features
        return total

    def exit_parameters(self, layer):
        raise ModelSpecError("Past-Future exits share their learners, gate and past aggregate across exits; "
                             "train them with an objective over every exit (weighted, as the paper, or joint)")

    def output_layers(self):
        return list(self.classifiers)

    def trained_logits(self, states, logits):
        if self.past not in NAIVE:
            return logits
        return torch.stack([self.local_logits(k, s) for k, s in enumerate(states, start=1)])

    def auxiliary_loss(self, states):
        """Eqs. 3-5: cosine imitation loss, averaged over targets j > k and exits k = 1..L-1 and rows;
        sources and targets detached, so it trains the learners only."""
        if not self.future:
            return None
        per_exit = []
        for k in range(1, self.num_layers):
            target = states[k:].detach().transpose(0, 1)  # real s_{k+1..L}, [b, L - k, d]
            imitated = self.imitate(states[k - 1].detach(), k)  # trains the learners, not the states (docstring)
            per_exit.append((1 - F.cosine_similarity(imitated, target, dim=-1)).mean(-1))
        return torch.stack(per_exit).mean()


@register_exit_stack("past_future")
def _past_future(num_layers, hidden_size, num_outputs, dropout, pretrained_pooler, pooling, **options):
    unknown = set(options) - {"past", "future", "gate"}
    if unknown:
        raise ModelSpecError(f"unknown past_future option(s) {', '.join(sorted(unknown))}; expected past, future, gate")
    return PastFutureExits(num_layers, hidden_size, num_outputs, dropout, pretrained_pooler, pooling, **options)
