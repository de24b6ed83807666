"""BERxiT: learning-to-exit (LTE) for classification and regression (Xin et al., EACL 2021).

Paper map:

| paper                         | code                                   |
| ----------------------------- | -------------------------------------- |
| h_i (state at layer i)        | ``state`` returned by each exit head   |
| u_i = sigma(c^T h_i + b), (8) | ``LearningToExit.forward``             |
| J_i = (u_i - u~_i)^2, (9)     | ``lte_loss``                           |
| u~_i, classification (10)     | ``lte_targets`` (argmax == y)          |
| u~_i, regression (11)         | ``lte_targets`` (1 - tanh abs err)     |
| Odd / Even objectives (6)(7)  | ``models.objectives`` ``alternating``  |
| exit when u_i >= tau          | ``LearnedExit`` (criterion ``lte``)    |

Registers the exit scorer ``lte`` and the criterion ``lte``.

Shape notation: L = exits, b = batch, d = hidden, c = outputs.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from models.criteria import ScoreThreshold, register_criterion
from models.registry import ExitScorer, register_scorer


@register_scorer("lte")
class LearningToExit(ExitScorer):
    """One ``Linear(d, 1) + sigmoid`` shared by all layers: ``state [b, d] -> certainty [b]``."""

    def __init__(self, hidden_size: int, num_layers: int | None = None):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)

    def forward(self, layer: int, state: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(state)).squeeze(-1)

    def all_layers(self, states: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(states)).squeeze(-1)  # one shared module: all layers at once

    def flops_at(self, layer: int, num_layers: int) -> int:
        return 2 * self.linear.in_features  # at every layer, the last included

    @staticmethod
    def objective_term(score, logits, labels, regression):
        """J_i is added to L_i in whichever objective runs (BERxiT section 4.2)."""
        return lte_loss(score, logits, labels, regression)


@register_criterion
class LearnedExit(ScoreThreshold):
    """BERxiT learning-to-exit: exit when the learned certainty ``u_k >= tau``."""

    name: ClassVar[str] = "lte"
    module: ClassVar[str] = "lte"
    requirement: ClassVar[str] = "a model trained with the LTE module (train.exit_scorer: lte)"

    def fires(self, score):
        return score >= self.threshold


def lte_targets(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Ground-truth certainty ``u~`` ``[L, b]`` from per-exit outputs ``[L, b, c]``; detached.

    Classification: ``1[argmax_j P_i^j == y]`` (Eq. 10). Regression: ``1 - tanh(|y_i - y|)`` (Eq. 11).
    """
    logits = logits.detach()
    if regression:
        return 1.0 - torch.tanh((logits.squeeze(-1) - labels.float()).abs())
    return (logits.argmax(-1) == labels).float()


def lte_loss(certainty: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """``J_i = (u_i - u~_i)^2`` per exit and row, ``[L, b]`` (Eq. 9)."""
    return (certainty - lte_targets(logits, labels, regression)) ** 2
