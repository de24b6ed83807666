"""A multi-exit token classifier: one tag head per encoder layer (the token-level annotator of
the learnability study). Shapes: L layers, b batch, s sub-tokens, c tags, d hidden.

It keeps its own four-line layer loop over the same adapter instead of going through
``MultiExitModel``: its heads predict per token (``[b, s, c]``) and it never exits, while the
core's heads, scorers and criteria all work on one decision per sequence; folding it in would
put per-token cases into every one of them.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from models.adapters import adapter_for
from models.training import build_optimizer, linear_schedule


class TokenMultiExitModel(nn.Module):
    """An HF encoder with a ``Linear(d, c)`` tag head after every layer."""

    def __init__(self, backbone: nn.Module, num_tags: int, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter_for(backbone)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(self.adapter.hidden_size, num_tags) for _ in range(self.adapter.num_layers))

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        """-> ``(logits [L, b, s, c], states [L, b, s, d])``."""
        hidden = self.adapter.embed(input_ids, token_type_ids)
        mask = self.adapter.attention_mask(attention_mask, hidden)
        logits, states = [], []
        for layer, head in zip(self.adapter.layers, self.heads):
            hidden = layer(hidden, mask)
            states.append(hidden)
            logits.append(head(self.dropout(hidden)))
        return torch.stack(logits), torch.stack(states)


def token_exit_loss(logits: torch.Tensor, tags: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean over layers of the token cross-entropy; ``tags [b, s]`` with ``ignore_index`` off first sub-tokens."""
    num_layers, num_tags = logits.shape[0], logits.shape[-1]
    flat = logits.reshape(num_layers, -1, num_tags)
    return torch.stack([F.cross_entropy(flat[k], tags.reshape(-1), ignore_index=ignore_index)
                        for k in range(num_layers)]).mean()


def train_token_epoch(model: TokenMultiExitModel, batches, optimizer: torch.optim.Optimizer, scheduler,
                      max_grad_norm: float = 1.0) -> float:
    """One pass of ``token_exit_loss`` over ``batches`` (``input_ids``, ``attention_mask``, ``tags``);
    returns the summed loss."""
    total = 0.0
    for batch in batches:
        logits, _ = model(batch["input_ids"], batch["attention_mask"])
        loss = token_exit_loss(logits, batch["tags"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        total += loss.item()
    return total


def fit_token_annotator(model: TokenMultiExitModel, epoch_batches: Callable[[int], Iterable[dict]], steps_per_epoch: int,
                        epochs: int, lr: float, on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train every tag head and the backbone: AdamW (weight decay 0.01), linear warmup over the
    first 10% of the steps, then decay to 0; ``epoch_batches(epoch)`` yields that epoch's batches.

    Returns the mean loss per epoch (the summed loss over ``steps_per_epoch``); ``on_epoch(epoch,
    mean loss)`` follows each epoch.
    """
    optimizer = build_optimizer(model, lr, 0.01)
    steps = steps_per_epoch * epochs
    scheduler = linear_schedule(optimizer, int(0.1 * steps), steps)
    model.train()
    losses = []
    for epoch in range(1, epochs + 1):
        losses.append(train_token_epoch(model, epoch_batches(epoch), optimizer, scheduler) / max(1, steps_per_epoch))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses
