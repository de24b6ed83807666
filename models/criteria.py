"""Exit criteria: per-row exit decisions on batches, shared by real inference and offline simulation.

Shape notation: L = exits (layers), b = batch rows, c = outputs (1 for regression).

A criterion is stepped once per layer k = 1..L with that layer's head output ``logits [b, c]``
and, for a learned criterion, the score ``[b]`` of the exit module it names in ``module``
(``"lte"``: BERxiT certainty; ``"policy"``: ConsistentEE exit probability). It returns a boolean
``[b]`` exit decision and its per-row state (a dict of ``[b, ...]`` tensors), which the exit
loop row-selects when it compacts the batch. The loop forces an exit at layer L.

Because a decision at layer k reads only layers <= k, ``simulate`` replays the same ``step``
over one recorded full forward pass and reproduces real early exit exactly (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np
import torch

from models.errors import ModelSpecError

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ExitCriterion:
    """Base class. ``threshold`` is the swept knob (tau, patience t, static layer k)."""

    threshold: float
    name: ClassVar[str] = "base"
    needs_certainty: ClassVar[bool] = False
    module: ClassVar[str | None] = None  # the learned exit module whose score ``step`` reads
    requirement: ClassVar[str] = "nothing beyond the exit heads"
    classification_only: ClassVar[bool] = False

    def init_state(self, batch_size: int, device: torch.device) -> State:
        return {}

    def needs_head(self, layer: int) -> bool:
        """Whether the exit head at ``layer`` must run (static exits skip all but one)."""
        return True

    def step(self, layer: int, logits: torch.Tensor, certainty: torch.Tensor | None, state: State):
        raise NotImplementedError

    @classmethod
    def learned_score(cls, scores: Mapping[str, torch.Tensor] | None) -> torch.Tensor | None:
        """This criterion's learned score ``[L, b]`` from a recording's ``scores``, or None."""
        if cls.module is None:
            return None
        if not scores or cls.module not in scores:
            raise ModelSpecError(f"the {cls.name!r} criterion needs {cls.requirement}")
        return scores[cls.module]

    @classmethod
    def sweep(cls, logits: torch.Tensor, scores: Mapping[str, torch.Tensor] | None, n: int) -> list[float]:
        """Threshold grid for trade-off curves: ``n`` quantiles of the criterion's score."""
        certainty = cls.learned_score(scores)
        scores = cls.score(logits[:-1], certainty[:-1] if certainty is not None else None)
        qs = np.quantile(scores.detach().flatten().double().cpu().numpy(), np.linspace(0.0, 1.0, n))
        return sorted({float(q) for q in qs})

    @staticmethod
    def score(logits, certainty) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Static(ExitCriterion):
    """Every row exits at layer ``k = threshold``."""

    name: ClassVar[str] = "static"

    def needs_head(self, layer):
        return layer == int(self.threshold)

    def step(self, layer, logits, certainty, state):
        return torch.full((logits.shape[0],), layer >= int(self.threshold), device=logits.device), state

    @classmethod
    def sweep(cls, logits, certainty, n):
        return [float(k) for k in range(1, logits.shape[0] + 1)]


@dataclass(frozen=True)
class MaxProb(ExitCriterion):
    """Right-Tool confidence: exit when ``max softmax >= tau``."""

    name: ClassVar[str] = "maxprob"
    classification_only: ClassVar[bool] = True

    @staticmethod
    def score(logits, certainty):
        return logits.softmax(-1).amax(-1)

    def step(self, layer, logits, certainty, state):
        return self.score(logits, None) >= self.threshold, state


@dataclass(frozen=True)
class Entropy(ExitCriterion):
    """DeeBERT: exit when the prediction entropy (nats, from ``log_softmax``) ``< tau``."""

    name: ClassVar[str] = "entropy"
    classification_only: ClassVar[bool] = True

    @staticmethod
    def score(logits, certainty):
        logp = logits.log_softmax(-1)
        return -(logp.exp() * logp).sum(-1)

    def step(self, layer, logits, certainty, state):
        return self.score(logits, None) < self.threshold, state

    @classmethod
    def sweep(cls, logits, certainty, n):
        # exit needs entropy < tau strictly: nudge the top so the most uncertain rows can exit too
        grid = super().sweep(logits, certainty, n)
        return grid[:-1] + [grid[-1] + 1e-6]


@dataclass(frozen=True)
class Patience(ExitCriterion):
    """PABEE: exit when the prediction stayed the same for ``t = threshold`` consecutive layers.

    The counter is 0 at layer 1; at layer k it grows by one when the prediction equals layer
    k-1's (classification: same argmax; regression: ``|y_k - y_{k-1}| < delta``), else resets.
    """

    delta: float = 0.1
    name: ClassVar[str] = "patience"

    def init_state(self, batch_size, device):
        return {"count": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def step(self, layer, logits, certainty, state):
        regression = logits.shape[-1] == 1
        current = logits.squeeze(-1) if regression else logits.argmax(-1).to(logits.dtype)
        if layer == 1:
            count = torch.zeros_like(state["count"])
        else:
            same = (current - state["previous"]).abs() < self.delta if regression else current == state["previous"]
            count = torch.where(same, state["count"] + 1, torch.zeros_like(state["count"]))
        return count >= int(self.threshold), {"count": count, "previous": current}

    @classmethod
    def sweep(cls, logits, certainty, n):
        return [float(t) for t in range(1, logits.shape[0])]


@dataclass(frozen=True)
class ScoreThreshold(ExitCriterion):
    """Base of learned criteria: exit when the score of exit scorer ``module`` passes ``tau``.

    Subclasses (registered by their method modules) set ``name``, ``module``, ``requirement``
    and ``fires``.
    """

    needs_certainty: ClassVar[bool] = True

    @staticmethod
    def score(logits, certainty):
        return certainty

    def fires(self, certainty: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, layer, logits, certainty, state):
        if certainty is None:
            raise ModelSpecError(f"the {self.name!r} criterion needs {self.requirement}")
        return self.fires(certainty), state


CRITERIA: dict[str, type[ExitCriterion]] = {c.name: c for c in (Static, MaxProb, Entropy, Patience)}


def register_criterion(cls: type[ExitCriterion]) -> type[ExitCriterion]:
    """Class decorator: make ``cls`` available by its ``name`` (``make_criterion``, configs)."""
    CRITERIA[cls.name] = cls
    return cls


def make_criterion(name: str, threshold: float, **options) -> ExitCriterion:
    """Build a criterion by registry name; unknown names list the valid choices."""
    if name not in CRITERIA:
        raise ValueError(f"unknown exit criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name](threshold, **options)


def select_rows(state: State, index: torch.Tensor) -> State:
    """Keep rows ``index`` of every per-row state tensor (batch compaction)."""
    return {key: value.index_select(0, index) for key, value in state.items()}


def simulate(criterion: ExitCriterion, logits: torch.Tensor, scores: Mapping[str, torch.Tensor] | None = None):
    """Replay ``criterion`` over one recorded full pass.

    Args:
        logits: ``[L, b, c]`` every exit head's output.
        scores: learned exit modules' outputs ``{name: [L, b]}`` (``MultiExitOutput.scores``);
            only needed by learned criteria, which read ``scores[criterion.module]``.

    Returns:
        ``(exit_layer [b] (1-based), exit_logits [b, c])``, identical to real early exit.
    """
    num_layers, batch = logits.shape[:2]
    certainty = criterion.learned_score(scores)
    state = criterion.init_state(batch, logits.device)
    exit_layer = torch.full((batch,), num_layers, dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    for k in range(1, num_layers):
        fire, state = criterion.step(k, logits[k - 1], certainty[k - 1] if certainty is not None else None, state)
        newly = fire & ~done
        exit_layer[newly] = k
        done |= fire
    rows = torch.arange(batch)
    return exit_layer, logits[exit_layer - 1, rows]

