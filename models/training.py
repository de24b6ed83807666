"""Pure training pieces: optimizer with weight-decay groups, a warmup/decay schedule, one epoch.

No file I/O: checkpointing and resuming live in ``tasks/train.py``; the stage/epoch loop with dev
selection is ``models.fitting``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from models.errors import ExitflowError
from models.exiting import MultiExitModel
from models.objectives import freeze_for_stage, objective_loss, release_inactive_grads


class NonFiniteLossError(ExitflowError, RuntimeError):
    """The loss became NaN or infinite; training stops and keeps the last good checkpoint."""


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, exclude: str | None = None,
                    leave_out: Iterable[nn.Parameter] = ()) -> torch.optim.AdamW:
    """AdamW with no decay on biases and LayerNorm weights (1-d parameters).

    ``exclude``: leave out parameters whose name starts with this prefix (e.g. ``"policy."``);
    ``leave_out``: leave out these parameters (e.g. LECO's architecture weights).
    """
    left_out = {id(p) for p in leave_out}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if (exclude is not None and name.startswith(exclude)) or id(p) in left_out:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def linear_schedule(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base lr over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def stochastic_freeze(bottom: int, step: int, total_steps: int, seed: int) -> frozenset[int]:
    """Layers among 1..``bottom`` whose output is detached at optimizer ``step`` (1-based).

    Each is drawn independently with probability p = 1 - (step - 1) / total_steps, decaying
    linearly from 1 at the first step to 0 (Global Past-Future section 3.4 as METHODS.md
    section 4 fixes it; the reference code draws the same p). Detaching layer k's output cuts
    the gradient path through layer k: layer k's own parameters get none, the layers below it
    only what reaches them through their own (and, for exits reading past states, later) exits;
    detaching layer 1 also freezes the embeddings. Draws depend only on ``(seed, step)``, so a resumed
    run draws what the uninterrupted one would.
    """
    if bottom <= 0:
        return frozenset()
    p = max(0.0, 1.0 - (step - 1) / max(1, total_steps))
    draws = torch.rand(bottom, generator=torch.Generator().manual_seed(seed * 1_000_003 + step))
    return frozenset(k for k in range(1, bottom + 1) if draws[k - 1] < p)


def train_epoch(
    model: MultiExitModel,
    batches: Iterable[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    objective: str,
    global_step: int,
    stage: int = 1,
    max_grad_norm: float = 1.0,
    on_step: Callable[[int, float], None] | None = None,
    before_step: Callable[[int], None] | None = None,
) -> tuple[int, float]:
    """One pass over ``batches``; returns ``(global_step, mean loss)``.

    ``global_step`` counts optimizer steps (1-based inside the loop), which is what
    ``alternating`` alternates on. ``before_step(step)`` runs before each forward pass (e.g.
    setting ``model.detached_layers`` from ``stochastic_freeze``); they are cleared afterwards.

    Raises:
        NonFiniteLossError: a loss was NaN/inf (nothing is stepped with it).
    """
    model.train()
    freeze_for_stage(model, objective, stage)
    regression = model.config.regression
    total, count = 0.0, 0
    for batch in batches:
        step = global_step + 1
        if before_step is not None:
            before_step(step)
        output = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        loss = objective_loss(objective, output, batch["labels"], regression, step, stage)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at optimizer step {step} ({objective}, stage {stage})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        release_inactive_grads(model, objective, step, stage)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_grad_norm)
        optimizer.step()
        scheduler.step()
        global_step = step
        total += loss.item()
        count += 1
        if on_step is not None:
            on_step(step, loss.item())
    model.detached_layers = frozenset()
    return global_step, total / max(1, count)


@dataclass
class Recording:
    """Every exit's output over a split from one full pass (the input of offline simulation).

    Attributes:
        logits: ``[L, n, c]``.
        scores: learned exit modules' outputs ``{name: [L, n]}`` (see ``MultiExitOutput``).
        labels: ``[n]``.
        lengths: ``[n]`` un-padded token counts.
    """

    logits: torch.Tensor
    scores: dict[str, torch.Tensor]
    labels: torch.Tensor
    lengths: torch.Tensor

    def cpu(self) -> "Recording":
        return Recording(self.logits.cpu(), {k: v.cpu() for k, v in self.scores.items()}, self.labels.cpu(), self.lengths.cpu())

    def head(self, n: int) -> "Recording":
        """The first ``n`` rows."""
        return Recording(self.logits[:, :n], {k: v[:, :n] for k, v in self.scores.items()}, self.labels[:n], self.lengths[:n])


@torch.no_grad()
def record_exits(model: MultiExitModel, batches: Iterable[dict[str, torch.Tensor]]) -> Recording:
    """One full recording pass in eval mode over all rows of ``batches``."""
    model.eval()
    logits, scores, labels, lengths = [], [], [], []
    for batch in batches:
        out = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        logits.append(out.logits)
        scores.append(out.scores)
        labels.append(batch["labels"])
        lengths.append(batch["attention_mask"].sum(1))
    names = scores[0].keys() if scores else ()
    return Recording(torch.cat(logits, 1), {k: torch.cat([s[k] for s in scores], 1) for k in names},
                     torch.cat(labels), torch.cat(lengths))
