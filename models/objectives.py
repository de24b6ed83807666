"""Training objectives for multi-exit models (METHODS.md section 0; BERxiT Eqs. 3-7).

Shape notation: L = exits, b = batch.

| name          | loss                                                            |
| ------------- | --------------------------------------------------------------- |
| ``joint``     | sum_i L_i (Eq. 3)                                               |
| ``weighted``  | sum_i i * L_i / sum_i i (PABEE, ConsistentEE init, Past-Future) |
| ``two_stage`` | stage 1: L_L over backbone + last head (Eq. 4); stage 2: sum_{i<L} L_i over heads 1..L-1 (Eq. 5) |
| ``alternating`` | odd global steps: L_L (Eq. 6); even steps: sum_i L_i (Eq. 7) |
| ``single``    | L_L only: the single-exit fine-tuned full model; HashEE's objective |

A model's exit scorer may add a term to every L_i (``ExitScorer.objective_term``): BERxiT's
LTE replaces L_i by L_i + J_i in whichever objective runs (section 4.2); ConsistentEE's policy
adds nothing (it has its own training step).
"""

from __future__ import annotations

import torch

from models.exit_heads import task_loss
from models.exiting import MultiExitModel, MultiExitOutput
from models.registry import SCORERS

OBJECTIVES = ("joint", "weighted", "two_stage", "alternating", "single")


def active_exits(objective: str, num_layers: int, step: int, stage: int = 1) -> list[int]:
    """1-based exits whose losses form the objective at global optimizer ``step`` (1-based)."""
    every = list(range(1, num_layers + 1))
    if objective in ("joint", "weighted"):
        return every
    if objective == "single":
        return [num_layers]
    if objective == "two_stage":
        return [num_layers] if stage == 1 else every[:-1]
    if objective == "alternating":
        return [num_layers] if step % 2 == 1 else every
    raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


def trained_exits(objective: str, num_layers: int) -> list[int]:
    """1-based exits whose heads ``objective`` trains over the whole run: checkpoint selection
    reads the mean dev score of these (METHODS.md section 0), never of untrained heads."""
    active_exits(objective, num_layers, 1)  # validates the name
    return [num_layers] if objective == "single" else list(range(1, num_layers + 1))


def selection_score(objective: str, layer_scores: list[float]) -> float:
    """Mean dev score over ``trained_exits``; ``layer_scores[k - 1]`` is exit k's score."""
    exits = trained_exits(objective, len(layer_scores))
    return sum(layer_scores[k - 1] for k in exits) / len(exits)


def per_exit_losses(output: MultiExitOutput, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """``L_i`` plus each exit scorer's objective term (LTE: ``J_i``), averaged over the batch, ``[L]``."""
    logits = output.trained_logits if output.trained_logits is not None else output.logits
    losses = task_loss(logits, labels, regression)  # [L, b]
    for name, score in output.scores.items():
        term = SCORERS[name].objective_term(score, logits, labels, regression)
        if term is not None:
            losses = losses + term
    return losses.mean(-1)


def objective_loss(
    objective: str, output: MultiExitOutput, labels: torch.Tensor, regression: bool, step: int, stage: int = 1
) -> torch.Tensor:
    """The scalar loss of ``objective`` at global optimizer ``step`` (1-based), plus the exits'
    auxiliary loss when they have one (Past-Future Eq. 13: L = L_ce + L_cos)."""
    losses = per_exit_losses(output, labels, regression)
    exits = active_exits(objective, losses.shape[0], step, stage)
    chosen = losses[torch.tensor(exits) - 1]
    if objective == "weighted":
        weights = torch.tensor(exits, dtype=chosen.dtype, device=chosen.device)
        loss = (weights * chosen).sum() / weights.sum()
    else:
        loss = chosen.sum()
    return loss + output.auxiliary_loss if output.auxiliary_loss is not None else loss


def freeze_for_stage(model: MultiExitModel, objective: str, stage: int) -> None:
    """``two_stage`` stage 2: freeze backbone (eval mode) and the last head; else unfreeze all."""
    frozen = objective == "two_stage" and stage == 2
    model.backbone.requires_grad_(not frozen)
    if frozen:
        for p in model.heads.exit_parameters(model.num_layers):
            p.requires_grad_(False)
        model.backbone.eval()
    else:
        model.heads.requires_grad_(True)


def release_inactive_grads(model: MultiExitModel, objective: str, step: int, stage: int = 1) -> None:
    """Set the grads of heads outside the current objective to None so AdamW cannot step them."""
    active = set(active_exits(objective, model.num_layers, step, stage))
    for k in range(1, model.num_layers + 1):
        if k not in active:
            for p in model.heads.exit_parameters(k):
                p.grad = None
