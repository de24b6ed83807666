"""The adapter protocol shared by all encoder families.

Shape notation: b = batch, s = sequence length, d = hidden size.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

LayerFn = Callable[[torch.Tensor, Any], torch.Tensor]


class EncoderAdapter:
    """Expose an HF encoder as ``embed`` + a list of ``layers`` for the exit loop.

    Args:
        backbone: an HF base model (e.g. ``BertModel``) as returned by ``AutoModel``.
    """

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.config = backbone.config

    # -- structure -------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def intermediate_size(self) -> int:
        return self.config.intermediate_size

    @property
    def layers(self) -> Sequence[LayerFn]:
        """L callables; ``layers[k - 1](h, mask)`` runs layer k (1-based)."""
        raise NotImplementedError

    @property
    def pretrained_pooler(self) -> nn.Linear | None:
        """The backbone's pretrained pooler dense layer, when it has one."""
        pooler = getattr(self.backbone, "pooler", None)
        return getattr(pooler, "dense", None)

    def embedding_flops(self, n_tokens: int) -> int:
        """Matmul FLOPs of the embedding step for one sequence (0 unless it projects)."""
        return 0

    # -- forward pieces --------------------------------------------------------
    def embed(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[b, s]`` ids -> ``[b, s, d]`` input of layer 1 (HF ``hidden_states[0]``)."""
        raise NotImplementedError

    def encode(self, input_ids: torch.Tensor, padding_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """All L layers, no exits: ``[b, s]`` ids -> last hidden states ``[b, s, d]``."""
        hidden = self.embed(input_ids, token_type_ids)
        mask = self.attention_mask(padding_mask, hidden)
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return hidden

    def attention_mask(self, padding_mask: torch.Tensor, hidden: torch.Tensor) -> Any:
        """``[b, s]`` 1/0 padding mask -> the mask object the layers take."""
        return create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=padding_mask
        )
