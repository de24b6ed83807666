"""Registries of exit modules: what sits on a layer's output, by name.

The core (``models/exiting.py``, ``models/objectives.py``, ``models/flops.py``) knows these
interfaces, never the methods. A method registers its modules in its own file with the
decorators below; ``models/__init__.py`` imports each method module once (one line per
method), so every registry is complete as soon as anything under ``models`` is imported.

| kind      | registry    | interface                                                          |
| --------- | ----------- | ------------------------------------------------------------------ |
| head      | ``HEADS``   | ``factory(d, c, dropout, pretrained_pooler, pooling) -> ExitHead`` |
| exit stack | ``EXIT_STACKS`` | ``factory(L, d, c, dropout, pretrained_pooler, pooling, **options) -> ExitStack`` |
| scorer    | ``SCORERS`` | ``ExitScorer`` subclass, built as ``cls(d, L)``                    |
| criterion | ``models.criteria.CRITERIA`` (``register_criterion``)           | ``ExitCriterion`` subclass |

An exit head maps a layer's hidden states ``[b, s, d]`` (and padding mask ``[b, s]``) to
``(logits [b, c], state [b, d])``; ``state`` is what scorers read. The model holds its L exits
as one ``ExitStack``: per-layer heads of a ``HEADS`` kind are wrapped in
``models.exit_heads.LocalExits``; a method whose exits share modules or read earlier layers
(Global Past-Future) registers a whole stack in ``EXIT_STACKS``. A stack may carry a per-row
*memory* from layer to layer (a dict of ``[b, ...]`` tensors, row-selected with the batch when
the loop compacts it), so an exit reading every past layer costs one update per layer.

An exit scorer turns a layer's state into a per-row score in [0, 1] that a learned criterion
thresholds (BERxiT's certainty u_k, ConsistentEE's exit probability pi_k). Its
``objective_term`` says whether the multi-exit objectives train it (LTE: yes, J_k is added to
L_k) or not (a policy trained by its own method: None).

Shape notation: L = layers (= exits), b = batch, s = sequence, d = hidden, c = outputs.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from torch import nn

HEADS: dict[str, Callable[..., nn.Module]] = {}
EXIT_STACKS: dict[str, Callable[..., "ExitStack"]] = {}
SCORERS: dict[str, type["ExitScorer"]] = {}


def register_head(name: str):
    """Class or factory decorator: ``@register_head("linear")``."""

    def add(factory):
        HEADS[name] = factory
        return factory

    return add


def register_exit_stack(name: str):
    """Factory decorator: ``@register_exit_stack("past_future")``."""

    def add(factory):
        EXIT_STACKS[name] = factory
        return factory

    return add


Memory = dict[str, torch.Tensor] | None


class ExitStack(nn.Module):
    """All L exits of a model, stepped once per layer by the model's loop.

    ``carries_memory``: the stack must see every layer (its memory needs each layer's state),
    even where the criterion takes no decision (static exits).
    """

    carries_memory: ClassVar[bool] = False

    def step(self, layer: int, hidden: torch.Tensor, padding: torch.Tensor, memory: Memory, decide: bool = True):
        """Exit ``layer`` (1-based) on ``hidden [b, s, d]`` -> ``(logits [b, c] or None when not
        ``decide``, state [b, d], memory)``."""
        raise NotImplementedError

    def flops(self, layer: int, n_tokens: int, decide: bool = True) -> int:
        """Matmul FLOPs of ``step`` for one row of ``n_tokens`` tokens (0 when a memory-less stack
        does not decide: the loop then skips it)."""
        raise NotImplementedError

    def exit_parameters(self, layer: int):
        """Parameters only exit ``layer`` uses (objectives that train a subset of the exits)."""
        raise NotImplementedError

    def output_layers(self) -> list[nn.Linear]:
        """Each exit's final layer (``d' -> c`` outputs), exit 1 first; regression training sets
        their bias (``MultiExitModel.start_regression_at``)."""
        raise NotImplementedError(f"{type(self).__name__} does not name its exits' output layers "
                                  f"(ExitStack.output_layers), which regression training needs")

    def trained_logits(self, states: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """What the objectives train, ``[L, b, c]``, from the recorded ``states [L, b, d]`` and
        exit outputs ``logits [L, b, c]``: the exit outputs unless the exits combine untrainable
        votes (then their local predictions)."""
        return logits

    def auxiliary_loss(self, states: torch.Tensor) -> torch.Tensor | None:
        """A scalar added to every objective (Past-Future's imitation loss), or None."""
        return None


def register_scorer(name: str):
    """Class decorator: ``@register_scorer("lte")``; sets the class's ``name``."""

    def add(cls):
        cls.name = name
        SCORERS[name] = cls
        return cls

    return add


class ExitScorer(nn.Module):
    """A learned per-layer exit score. Subclasses implement ``forward`` and ``flops_at``."""

    name: ClassVar[str] = "base"

    def forward(self, layer: int, state: torch.Tensor) -> torch.Tensor:
        """Score at 1-based ``layer`` for ``state [b, d]`` -> ``[b]``."""
        raise NotImplementedError

    def all_layers(self, states: torch.Tensor) -> torch.Tensor:
        """``states [L, b, d]`` -> ``[L, b]``."""
        return torch.stack([self(k, s) for k, s in enumerate(states, start=1)])

    def flops_at(self, layer: int, num_layers: int) -> int:
        """Matmul FLOPs of scoring one row at 1-based ``layer``."""
        raise NotImplementedError

    @staticmethod
    def objective_term(score: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, regression: bool):
        """Per-exit, per-row term ``[L, b]`` added to L_i in the multi-exit objectives, or None."""
        return None


def choices(registry: dict) -> str:
    return ", ".join(sorted(registry))


def build_scorer(name: str, hidden_size: int, num_layers: int) -> ExitScorer:
    if name not in SCORERS:
        raise ValueError(f"unknown exit scorer {name!r}; registered: {choices(SCORERS)}")
    return SCORERS[name](hidden_size, num_layers)
