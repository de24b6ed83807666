"""A multi-exit token classifier: one tag head per encoder layer (the token-level annotator of
the learnability study). Shapes: L layers, b batch, s sub-tokens, c tags, d hidden.

It keeps its own four-line layer loop over the same adapter instead of going through
``MultiExitModel``: its heads predict per token (``[b, s, c]``) and it never exits, while the
core's heads, scorers and criteria all work on one decision per sequence; folding it in would
put per-token cases into every one of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.adapters import adapter_for


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
