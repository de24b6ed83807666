"""LECO: exits whose architecture is searched (first-order DARTS, one search per layer) and
comparison-based early exiting (COBEE). Paper: ``../shared/papers/leco.md``; spec: METHODS.md
section 5. No public code exists; every choice the paper leaves open is listed below.

Shape notation: L = layers (= exits), b = batch, s = sequence, d = hidden, e = d_e (the exit's
inner size), c = outputs.

**The exit cell** (paper section 4, Figure 1): ``x = down(H)`` (Linear d -> e), then

    activation_1 -> encoder (slot encoder_1 + slot encoder_2) -> pooling -> activation_2 -> Linear(e, c)

Each of the five choices (``SEARCH_SPACE``) is one op (a derived exit) or, while searching, the
softmax-weighted sum of all its candidates ``sum_o softmax(alpha)_o * o(x)`` with its own
``alpha`` per layer (macro search; DARTS Eq. in paper section 3.2; ``Choice``).

- Encoder ops: ``conv_k`` (1-d convolution over the sequence, e filters, kernel k, same
  padding), ``mha_k`` (self-attention with k heads of size e / k, Q/K/V and output
  projections), ``skip`` (identity), ``null`` (zeros).
- Pooling ops: ``cls`` (position 0), ``avg`` / ``max`` (over real tokens), ``sa``
  (self-attention pooling: ``softmax_t(w . x_t + b)``-weighted sum over real tokens).
- Padding: convolutions read and write zeros at padded positions, attention never attends
  to them, pooling ignores them (``skip`` and the activations pass whatever is there; pooling
  drops it); a padded row gives the same exit output as the same row unpadded (tested).
  ``cls`` pools position 0, which is [CLS] with right padding (every exitflow batch).

**Decisions the paper leaves open** (also in the README):

- Derivation takes the argmax of each choice, ``null`` included. A ``null`` slot is removed;
  when both slots are ``null`` the encoder cell is removed and pooling reads the first
  activation's output (the issue's rule; in the supernet a ``null`` slot contributes zero).
- No residual connection, LayerNorm or dropout inside the cell (the paper draws none); dropout
  (``head_dropout``) sits before the final Linear, as in every other exitflow head.
- The state handed to exit scorers (LTE) is the layer's token summary under the model's
  ``pooling`` (mean for MiniLM), as for the linear heads; not the cell's pooled vector.
- The search alternates one D2 batch (architecture step) and one D1 batch (weight step),
  architecture first, as first-order DARTS does (a lone trailing D2 batch is dropped); the
  weights' lr follows a linear warmup/decay, the architecture's lr is constant. The
  architecture step detaches every layer's output: the alphas live in the exits only, so
  their gradient is the same and the backbone's backward pass is skipped.
- Budget (``params.yaml`` ``leco:``): 2 search epochs on the default run's 4,000-row SST-2 subsample
  (the paper: 30 epochs on the full split), weights at ``train.lr`` 3e-4 and the architecture
  at 3e-3, the paper's 10x ratio (2e-5 / 2e-4 for ALBERT). Retraining keeps the default run's LTE
  scorer (L_i + J_i, BERxiT), as do the JT / ALT / 2ST baselines; Past-Future has none.
- COBEE at regression: not defined (k* needs classes); the criterion is classification-only.
  COBEE sweeps tau at a fixed patience t (``leco.cobee_patience``, 1): the counter is 0 at
  layer 1, so no row exits before layer t + 1 and the layer speed-up is at most L / (t + 1)
  (3x on the 6-layer MiniLM; at that end every row exits at layer 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.criteria import ExitCriterion, register_criterion
from models.errors import ModelSpecError
from models.exit_heads import LocalExits, pool_tokens
from models.objectives import objective_loss
from models.registry import register_exit_stack

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "gelu": F.gelu, "swish": F.silu, "tanh": torch.tanh, "leaky_relu": F.leaky_relu,
    "identity": lambda x: x,
}
ENCODER_OPS = ("conv_1", "conv_3", "conv_5", "mha_2", "mha_4", "mha_8", "skip", "null")
POOLING_OPS = ("cls", "avg", "max", "sa")
SEARCH_SPACE: dict[str, tuple[str, ...]] = {
    "activation_1": tuple(ACTIVATIONS),
    "encoder_1": ENCODER_OPS,
    "encoder_2": ENCODER_OPS,
    "pooling": POOLING_OPS,
    "activation_2": tuple(ACTIVATIONS),
}
ENCODER_SLOTS = ("encoder_1", "encoder_2")


# --- ops: every one maps (x [b, s, e] or [b, e], padding [b, s]) to its output ---------------

class Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name, self.fn = name, ACTIVATIONS[name]

    def forward(self, x, padding):
        return self.fn(x)

    def flops(self, n_tokens):
        return 0


class Convolution(nn.Module):
    """``conv_k``: 1-d convolution over the sequence, stride 1, same padding, e -> e filters."""

    def __init__(self, inner_size: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(inner_size, inner_size, kernel, padding=kernel // 2)

    def forward(self, x, padding):
        keep = padding.unsqueeze(-1).to(x.dtype)  # [b, s, 1]
        return self.conv((x * keep).transpose(1, 2)).transpose(1, 2) * keep

    def flops(self, n_tokens):
        e, k = self.conv.out_channels, self.conv.kernel_size[0]
        return 2 * n_tokens * e * e * k


class SelfAttention(nn.Module):
    """``mha_k``: k-head self-attention of head size e / k over real tokens, with an output projection."""

    def __init__(self, inner_size: int, heads: int):
        super().__init__()
        if inner_size % heads:
            raise ModelSpecError(f"leco inner_size (d_e) {inner_size} does not divide into mha_{heads}'s {heads} heads; "
                                 f"choose a d_e divisible by {heads}")
        self.heads = heads
        self.qkv = nn.Linear(inner_size, 3 * inner_size)
        self.out = nn.Linear(inner_size, inner_size)

    def forward(self, x, padding):
        b, s, e = x.shape
        q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))  # [b, h, s, e/h]
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [b, h, s, s]
        scores = scores.masked_fill(padding[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, e)
        return self.out(attended) * padding.unsqueeze(-1).to(x.dtype)

    def flops(self, n_tokens):
        n, e = n_tokens, self.out.in_features
        return 2 * n * e * 3 * e + 2 * 2 * n * n * e + 2 * n * e * e


class Skip(nn.Module):
    def forward(self, x, padding):
        return x

    def flops(self, n_tokens):
        return 0


class Null(nn.Module):
    """The zero op: contributes nothing (a mixture skips computing it)."""

    def forward(self, x, padding):
        return torch.zeros_like(x)

    def flops(self, n_tokens):
        return 0


class Pooling(nn.Module):
    """``[b, s, e]`` -> ``[b, e]``: ``cls``, ``avg``, ``max`` or ``sa`` (self-attention pooling)."""

    def __init__(self, inner_size: int, kind: str):
        super().__init__()
        self.kind = kind
        self.score = nn.Linear(inner_size, 1) if kind == "sa" else None

    def forward(self, x, padding):
        if self.kind == "cls":
            return x[:, 0]
        if self.kind == "avg":
            return pool_tokens(x, padding, "mean")
        real = padding.unsqueeze(-1) != 0  # [b, s, 1]
        if self.kind == "max":
            return x.masked_fill(~real, torch.finfo(x.dtype).min).amax(1)
        weights = self.score(x).masked_fill(~real, torch.finfo(x.dtype).min).softmax(1)  # [b, s, 1]
        return (weights * x).sum(1)

    def flops(self, n_tokens):
        return 2 * n_tokens * self.score.in_features if self.score is not None else 0


def build_op(choice: str, name: str, inner_size: int) -> nn.Module:
    if choice.startswith("activation"):
        return Activation(name)
    if choice == "pooling":
        return Pooling(inner_size, name)
    if name.startswith("conv_"):
        return Convolution(inner_size, int(name.split("_")[1]))
    if name.startswith("mha_"):
        return SelfAttention(inner_size, int(name.split("_")[1]))
    return Skip() if name == "skip" else Null()


class Choice(nn.Module):
    """One edge of the exit cell: its single op, or (search) ``sum_o softmax(alpha)_o * o(x)``.

    ``alpha [n_candidates]`` exists only with more than one candidate (zeros at start: uniform).
    """

    def __init__(self, choice: str, candidates: Sequence[str], inner_size: int):
        super().__init__()
        self.candidates = tuple(candidates)
        self.ops = nn.ModuleList(build_op(choice, name, inner_size) for name in self.candidates)
        self.alpha = nn.Parameter(torch.zeros(len(self.candidates))) if len(self.candidates) > 1 else None

    def weights(self) -> torch.Tensor:
        return self.alpha.softmax(-1) if self.alpha is not None else torch.ones(1)

    def forward(self, x: torch.Tensor, padding: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if self.alpha is None and weights is None:
            return self.ops[0](x, padding)
        weights = self.weights() if weights is None else weights
        out = torch.zeros((), dtype=x.dtype, device=x.device)
        for w, name, op in zip(weights, self.candidates, self.ops):
            if name != "null":
                out = out + w * op(x, padding)
        return out if out.ndim else torch.zeros_like(x)

    def flops(self, n_tokens: int) -> int:
        return sum(op.flops(n_tokens) for op in self.ops)


def cell_choices(spec: Mapping[str, str | Sequence[str]], where: str) -> dict[str, tuple[str, ...]]:
    """Validate one layer's cell: every key of ``SEARCH_SPACE``, each an op name or a list of
    candidates from that choice's space -> ``{choice: (candidates...)}``."""
    if not isinstance(spec, Mapping):
        raise ModelSpecError(f"{where}: expected a mapping of {', '.join(SEARCH_SPACE)} to op names, got {spec!r}")
    unknown = sorted(set(spec) - set(SEARCH_SPACE))
    missing = [key for key in SEARCH_SPACE if key not in spec]
    if unknown or missing:
        raise ModelSpecError(f"{where}: " + "; ".join(
            ([f"unknown key(s) {', '.join(map(repr, unknown))}"] if unknown else [])
            + ([f"missing key(s) {', '.join(map(repr, missing))}"] if missing else []))
            + f"; expected exactly {', '.join(SEARCH_SPACE)}")
    out = {}
    for key, space in SEARCH_SPACE.items():
        names = (spec[key],) if isinstance(spec[key], str) else tuple(spec[key])
        bad = [name for name in names if name not in space]
        if bad or not names or len(set(names)) != len(names):
            raise ModelSpecError(f"{where}: {key} = {spec[key]!r} is not a set of {key} ops; "
                                 f"choose among {', '.join(space)}")
        out[key] = names
    return out


def check_architecture(architecture, num_layers: int, where: str = "leco architecture") -> list[dict[str, tuple[str, ...]]]:
    """One cell (applied to every layer) or a list of exactly ``num_layers`` cells -> per-layer choices."""
    if isinstance(architecture, Mapping):
        return [cell_choices(architecture, where)] * num_layers
    if not isinstance(architecture, Sequence) or isinstance(architecture, str) or len(architecture) != num_layers:
        got = len(architecture) if isinstance(architecture, Sequence) and not isinstance(architecture, str) else repr(architecture)
        raise ModelSpecError(f"{where}: expected one cell per layer ({num_layers} layers), got {got}")
    return [cell_choices(cell, f"{where}, layer {k}") for k, cell in enumerate(architecture, start=1)]


class LecoExit(nn.Module):
    """One layer's exit: ``down -> activation_1 -> encoder -> pooling -> activation_2 -> Linear``.

    ``forward(hidden [b, s, d], padding [b, s]) -> (logits [b, c], state [b, d])``.
    """

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float, cell: Mapping[str, Sequence[str]],
                 inner_size: int, pooling: str):
        super().__init__()
        self.state_pooling = pooling
        self.down = nn.Linear(hidden_size, inner_size)
        self.activation_1 = Choice("activation_1", cell["activation_1"], inner_size)
        # a slot derived to `null` is removed; with both removed, pooling reads activation_1's output
        self.encoders = nn.ModuleDict({slot: Choice(slot, cell[slot], inner_size)
                                       for slot in ENCODER_SLOTS if tuple(cell[slot]) != ("null",)})
        self.pooling = Choice("pooling", cell["pooling"], inner_size)
        self.activation_2 = Choice("activation_2", cell["activation_2"], inner_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(inner_size, num_outputs)

    def choices(self) -> dict[str, Choice]:
        return {"activation_1": self.activation_1, **self.encoders, "pooling": self.pooling, "activation_2": self.activation_2}

    def forward(self, hidden, padding):
        x = self.activation_1(self.down(hidden), padding)  # [b, s, e]
        if len(self.encoders):
            x = sum(slot(x, padding) for slot in self.encoders.values())
        pooled = self.activation_2(self.pooling(x, padding), padding)  # [b, e]
        return self.classifier(self.dropout(pooled)), pool_tokens(hidden, padding, self.state_pooling)

    def flops(self, n_tokens: int) -> int:
        d, e, c = self.down.in_features, self.down.out_features, self.classifier.out_features
        return 2 * n_tokens * d * e + sum(choice.flops(n_tokens) for choice in self.choices().values()) + 2 * e * c


class LecoExits(LocalExits):
    """L LECO exits (``self[k - 1]`` is exit k), each with its own cell (macro search)."""

    def architecture_parameters(self) -> list[nn.Parameter]:
        """Every ``alpha`` (empty for derived exits)."""
        return [choice.alpha for exit_ in self for choice in exit_.choices().values() if choice.alpha is not None]

    def architecture_weights(self) -> list[dict[str, dict[str, float]]]:
        """Per layer ``{choice: {op: softmax(alpha)_op}}`` (a derived choice has weight 1 on its op;
        a removed ``null`` slot reads ``{"null": 1.0}``)."""
        out = []
        for exit_ in self:
            found = {name: dict(zip(choice.candidates, choice.weights().tolist())) for name, choice in exit_.choices().items()}
            out.append({key: found.get(key, {"null": 1.0}) for key in SEARCH_SPACE})
        return out


@register_exit_stack("leco")
def _leco(num_layers, hidden_size, num_outputs, dropout, pretrained_pooler, pooling, architecture=None,
          inner_size: int = 32):
    """``architecture``: None (the whole search space at every layer), one cell for every layer,
    or one cell per layer; a cell maps each choice to an op (derived) or a list of candidates."""
    cells = check_architecture(SEARCH_SPACE if architecture is None else architecture, num_layers)
    if int(inner_size) <= 0:
        raise ModelSpecError(f"leco inner_size (d_e) must be a positive integer, got {inner_size!r}")
    return LecoExits(LecoExit(hidden_size, num_outputs, dropout, cell, int(inner_size), pooling) for cell in cells)


def derive_architecture(weights: Sequence[Mapping[str, Mapping[str, float]]]) -> list[dict[str, str]]:
    """Discretisation: per layer and choice the op of largest weight (``null`` may win; ties go to
    the earlier candidate)."""
    return [{choice: max(ops, key=lambda op: (ops[op], -list(ops).index(op))) for choice, ops in layer.items()}
            for layer in weights]


def split_halves(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-epoch 1:1 re-split of the training rows: ``(D1 rows, D2 rows)``, seeded."""
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[: n_rows // 2]), np.sort(order[n_rows // 2:])


def search_epoch(model, d1_batches: Iterable[dict], d2_batches: Iterable[dict], weight_optimizer, architecture_optimizer,
                 scheduler, max_grad_norm: float = 1.0, on_step: Callable[[int, float, float], None] | None = None,
                 global_step: int = 0) -> tuple[int, float, float]:
    """One first-order DARTS epoch with the ``joint`` objective (paper section 6.3).

    Each step: a D2 batch updates the architecture weights (``architecture_optimizer`` holds
    only the alphas), then a D1 batch updates the model weights (``weight_optimizer``: the
    rest). Gradients are cleared between the two, so each optimizer only ever sees gradients
    from its own half. Returns ``(global_step, mean D1 loss, mean D2 loss)``.
    """
    model.train()
    regression = model.config.regression
    totals, count = [0.0, 0.0], 0
    every_layer = frozenset(range(1, model.num_layers + 1))
    for d2, d1 in zip(d2_batches, d1_batches):
        losses = []
        for batch, optimizer in ((d2, architecture_optimizer), (d1, weight_optimizer)):
            model.zero_grad(set_to_none=True)
            model.detached_layers = every_layer if optimizer is architecture_optimizer else frozenset()
            output = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            loss = objective_loss("joint", output, batch["labels"], regression, global_step + 1)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"search loss is {loss.item()} at step {global_step + 1}")
            loss.backward()
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if optimizer is weight_optimizer:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
        model.zero_grad(set_to_none=True)
        model.detached_layers = frozenset()
        scheduler.step()
        global_step += 1
        totals[0] += losses[1]
        totals[1] += losses[0]
        count += 1
        if on_step is not None:
            on_step(global_step, losses[1], losses[0])
    return global_step, totals[0] / max(1, count), totals[1] / max(1, count)


@register_criterion
@dataclass(frozen=True)
class Cobee(ExitCriterion):
    """COBEE (paper Eqs. 6-7): exit when ``count >= patience`` (t), with ``threshold`` = tau.

    At layer m: k* = argmax P_m; di = |P_m(k*) - P_{m-1}(k*)| (Eq. 6); the counter grows by one
    when di < tau and resets to 0 otherwise (Eq. 7); it is 0 at layer 1.
    """

    patience: int = 1
    name: ClassVar[str] = "cobee"
    classification_only: ClassVar[bool] = True

    def init_state(self, batch_size, device):
        return {"count": torch.zeros(batch_size, dtype=torch.long, device=device)}

    @staticmethod
    def disagreement(probs: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Eq. 6: ``[..., c]`` distributions of layers m and m-1 -> ``[...]``."""
        top = probs.argmax(-1, keepdim=True)
        return (probs.gather(-1, top) - previous.gather(-1, top)).abs().squeeze(-1)

    def step(self, layer, logits, certainty, state):
        probs = logits.softmax(-1)
        if layer == 1:
            count = torch.zeros_like(state["count"])
        else:
            calm = self.disagreement(probs, state["previous"]) < self.threshold
            count = torch.where(calm, state["count"] + 1, torch.zeros_like(state["count"]))  # Eq. 7
        return count >= self.patience, {"count": count, "previous": probs}

    @classmethod
    def sweep(cls, logits, scores, n):
        """``n`` quantiles of di over layers 2..L-1, the top nudged up so every row can exit."""
        probs = logits[:-1].softmax(-1)
        di = cls.disagreement(probs[1:], probs[:-1]).detach()
        qs = np.quantile(di.flatten().double().cpu().numpy(), np.linspace(0.0, 1.0, n)) if di.numel() else np.zeros(1)
        grid = sorted({float(q) for q in qs})
        return grid[:-1] + [grid[-1] + 1e-6]
