"""Adapter for the encoder of a BART-style seq2seq model (``BartModel``,
``BartForConditionalGeneration`` or a bare ``BartEncoder``); the decoder is left alone.

The encoder is post-LN like BERT: embed = ``embed_tokens`` (times ``embed_scale``) + learned
positions, then ``layernorm_embedding``; each layer is self-attention -> residual ->
``self_attn_layer_norm`` -> ``fc1`` / activation / ``fc2`` -> residual -> ``final_layer_norm``.

Shape notation: b = batch, n = tokens, m = running tokens (a prefix after sorting), d = d_model.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.adapters.attention import module_prefix_attention
from models.adapters.base import EncoderAdapter, LayerFn


class BartEncoderAdapter(EncoderAdapter):
    """The encoder of a BART-style model (``model.get_encoder()``), layer by layer."""

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone)
        self.encoder = backbone.get_encoder()  # a BartEncoder returns itself

    @property
    def num_layers(self) -> int:
        return self.config.encoder_layers

    @property
    def hidden_size(self) -> int:
        return self.config.d_model

    @property
    def intermediate_size(self) -> int:
        return self.config.encoder_ffn_dim

    @property
    def layers(self) -> Sequence[LayerFn]:
        return list(self.encoder.layers)

    @property
    def pretrained_pooler(self):
        return None

    def embed(self, input_ids: torch.Tensor, token_type_ids=None) -> torch.Tensor:
        """``[b, n]`` ids -> ``[b, n, d]``: scaled token + position embeddings, LayerNorm (as ``BartEncoder``)."""
        enc = self.encoder
        tokens = enc.embed_tokens(input_ids)  # BartScaledWordEmbedding applies embed_scale
        hidden = enc.layernorm_embedding(tokens + enc.embed_positions(input_ids).to(tokens.device))
        return F.dropout(hidden, enc.dropout, enc.training)

    def prefix_layer(self, layer, hidden: torch.Tensor, m: int, key_bias: torch.Tensor) -> torch.Tensor:
        """HashEE layer: ``[b, n, d]`` -> new states of the first ``m`` tokens ``[b, m, d]``."""
        att = layer.self_attn
        ctx = module_prefix_attention(att, att.q_proj, att.k_proj, att.v_proj, hidden, m, att.num_heads, key_bias)
        x = layer.self_attn_layer_norm(hidden[:, :m] + F.dropout(att.out_proj(ctx), layer.dropout, layer.training))
        ffn = F.dropout(layer.activation_fn(layer.fc1(x)), layer.activation_dropout, layer.training)
        return layer.final_layer_norm(x + F.dropout(layer.fc2(ffn), layer.dropout, layer.training))
