"""Exit heads: one per layer, all in one ``nn.ModuleList`` (the last head is an ordinary member).

Shape notation: b = batch, s = sequence length, d = hidden size, c = outputs (classes, or 1
for regression), d_e = the ``mha`` head's inner size.

Every head maps the layer's hidden states to ``(logits [b, c], state [b, d])``. ``state`` is
what learned exit modules (BERxiT's LTE, ConsistentEE's policy) read: the [CLS] hidden state
after the head's optional per-layer pooler (METHODS.md section 0).

``pooling`` chooses the token summary the ``linear`` and ``pooler`` heads read: ``cls`` (the
spec's default) or ``mean`` (masked mean over real tokens). ``mean`` exists for backbones
pretrained with mean pooling: in the default MiniLM-L6 (a sentence-transformers model) the
[CLS] state of layers 1-3 is the same for every input (std 0.001; a linear probe on SST-2
scores 50.7%, chance), while mean-pooled states reach 73-75%, so [CLS] heads there cannot learn.

Regression exits (1 output, squared error) start at the training labels' mean
(``MultiExitModel.start_regression_at``: the output bias; the weights keep their random init), not near 0
(``nn.Linear``'s default bias, uniform in +-1/sqrt(d)). AdamW moves a parameter by at most about
lr per step, so over the standard profile's 250 steps at lr 1e-4 (warmup, then linear decay) the
bias travels at most about 0.013, while STS-B labels average 2.7: exits reading a bounded state
(the ``pooler`` head's tanh, Global Past-Future's merged state) spent the budget learning the
offset. On STS-B (4,000 rows, 2 epochs, seed 42, MiniLM-L6) the last exit's dev
Pearson/Spearman went from 63.0 to 84.6 for weighted ``pooler`` heads and from 76.2 to 84.3 for
Past-Future (concat, with the future); weighted ``linear`` heads, on unbounded states, went from
84.8 to 84.1 (one seed).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ModelSpecError
from models.registry import EXIT_STACKS, HEADS, ExitStack, choices, register_head

POOLINGS = ("cls", "mean")


def pool_tokens(hidden: torch.Tensor, padding_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[b, s, d]`` -> ``[b, d]``: the [CLS] state, or the mean over real (mask 1) tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = padding_mask.unsqueeze(-1).to(hidden.dtype)  # [b, s, 1]
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class LinearHead(nn.Module):
    """``dropout -> Linear(d, c)`` on the pooled ([CLS] or mean) state."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1, pooling: str = "cls"):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_outputs)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor):
        state = pool_tokens(hidden, padding_mask, self.pooling)  # [b, d]
        return self.classifier(self.dropout(state)), state

    def flops(self, n_tokens: int) -> int:
        return 2 * self.classifier.in_features * self.classifier.out_features


class PoolerHead(LinearHead):
    """Per-layer ``dense + tanh`` pooler (from the backbone's pretrained pooler), then a linear head."""

    def __init__(self, hidden_size, num_outputs, dropout=0.1, pretrained_pooler: nn.Linear | None = None,
                 pooling: str = "cls"):
        super().__init__(hidden_size, num_outputs, dropout, pooling)
        self.dense = copy.deepcopy(pretrained_pooler) if pretrained_pooler is not None else nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden, padding_mask):
        state = torch.tanh(self.dense(pool_tokens(hidden, padding_mask, self.pooling)))  # [b, d]
        return self.classifier(self.dropout(state)), state

    def flops(self, n_tokens: int) -> int:
        return 2 * self.dense.in_features * self.dense.out_features + super().flops(n_tokens)


class MHAHead(nn.Module):
    """Down-project to d_e, one multi-head self-attention layer, tanh, pool [CLS], Linear.

    The state handed to learned exit modules is the layer's raw [CLS] hidden state ``[b, d]``.
    """

    def __init__(self, hidden_size, num_outputs, dropout=0.1, inner_size: int = 64, num_heads: int = 4):
        super().__init__()
        self.down = nn.Linear(hidden_size, inner_size)
        self.qkv = nn.Linear(inner_size, 3 * inner_size)
        self.out = nn.Linear(inner_size, inner_size)
        self.num_heads = num_heads
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(inner_size, num_outputs)

    def forward(self, hidden, padding_mask):
        b, s, _ = hidden.shape
        x = self.down(hidden)  # [b, s, d_e]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # [b, s, d_e] -> [b, h, s, d_e / h]
        q, k, v = (t.view(b, s, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        bias = torch.zeros(b, 1, 1, s, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(padding_mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias  # [b, h, s, s]
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, -1)  # [b, s, d_e]
        pooled = torch.tanh(self.out(attended))[:, 0]  # [b, d_e]
        return self.classifier(self.dropout(pooled)), hidden[:, 0]

    def flops(self, n_tokens: int) -> int:
        d, e, c = self.down.in_features, self.down.out_features, self.classifier.out_features
        n = n_tokens
        return 2 * n * d * e + 2 * n * e * 3 * e + 2 * 2 * n * n * e + 2 * n * e * e + 2 * e * c


@register_head("linear")
def _linear(hidden_size, num_outputs, dropout, pretrained_pooler, pooling):
    return LinearHead(hidden_size, num_outputs, dropout, pooling)


@register_head("pooler")
def _pooler(hidden_size, num_outputs, dropout, pretrained_pooler, pooling):
    return PoolerHead(hidden_size, num_outputs, dropout, pretrained_pooler, pooling)


@register_head("mha")
def _mha(hidden_size, num_outputs, dropout, pretrained_pooler, pooling):
    return MHAHead(hidden_size, num_outputs, dropout)  # pools [CLS] after its own attention


class LocalExits(ExitStack, nn.ModuleList):
    """L independent per-layer heads (``heads[k - 1]`` is exit k): each reads only its own layer."""

    def step(self, layer, hidden, padding, memory, decide=True):
        logits, state = self[layer - 1](hidden, padding)
        return logits, state, memory

    def flops(self, layer, n_tokens, decide=True):
        return self[layer - 1].flops(n_tokens) if decide else 0

    def exit_parameters(self, layer):
        return self[layer - 1].parameters()

    def output_layers(self):
        return [head.classifier for head in self]


def build_exit_heads(
    kind: str,
    num_layers: int,
    hidden_size: int,
    num_outputs: int,
    dropout: float = 0.1,
    pretrained_pooler: nn.Linear | None = None,
    pooling: str = "cls",
    options: dict | None = None,
) -> ExitStack:
    """The L exits of a registered head kind (``linear``, ``pooler``, ``mha``: one head per layer)
    or exit stack (``past_future``), with the stack's ``options``."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if kind in EXIT_STACKS:
        return EXIT_STACKS[kind](num_layers, hidden_size, num_outputs, dropout, pretrained_pooler, pooling, **(options or {}))
    if kind not in HEADS:
        raise ValueError(f"unknown exit head kind {kind!r}; registered: {choices({**HEADS, **EXIT_STACKS})}")
    if options:
        raise ModelSpecError(f"exit head kind {kind!r} takes no options; got {', '.join(sorted(options))}")
    return LocalExits(HEADS[kind](hidden_size, num_outputs, dropout, pretrained_pooler, pooling) for _ in range(num_layers))


def task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Per-row loss ``[..., b]``: cross-entropy, or squared error for regression (1 output)."""
    if regression:
        return (logits.squeeze(-1) - labels.float()) ** 2
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.expand(logits.shape[:-1]).reshape(-1), reduction="none")
    return flat.view(logits.shape[:-1])
