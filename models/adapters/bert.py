"""Adapters for BERT-layout encoders: BERT, RoBERTa, ELECTRA; plus ALBERT and DistilBERT.

BERT, RoBERTa and ELECTRA share ``embeddings`` + ``encoder.layer[i](h, mask)``; ELECTRA may
project its embeddings (``embeddings_project``). ALBERT maps embeddings into the hidden size
and shares layer groups across depth. DistilBERT keeps layers in ``transformer.layer``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from models.adapters.attention import module_prefix_attention
from models.adapters.base import EncoderAdapter, LayerFn


class BertAdapter(EncoderAdapter):
    """BERT, RoBERTa and ELECTRA (``model.encoder.layer``)."""

    @property
    def layers(self) -> Sequence[LayerFn]:
        return list(self.backbone.encoder.layer)

    def _projection(self):
        return getattr(self.backbone, "embeddings_project", None)  # ELECTRA only

    def embed(self, input_ids, token_type_ids=None):
        hidden = self.backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        projection = self._projection()
        return projection(hidden) if projection is not None else hidden

    def prefix_layer(self, layer, hidden: torch.Tensor, m: int, key_bias: torch.Tensor) -> torch.Tensor:
        """HashEE layer: ``[b, n, d]`` -> new states of the first ``m`` tokens ``[b, m, d]``."""
        att = layer.attention.self
        ctx = module_prefix_attention(att, att.query, att.key, att.value, hidden, m, att.num_attention_heads, key_bias)
        x = layer.attention.output(ctx, hidden[:, :m])  # dense, dropout, LayerNorm(x + residual)
        return layer.output(layer.intermediate(x), x)  # FFN with residual LayerNorm

    def embedding_flops(self, n_tokens: int) -> int:
        projection = self._projection()
        if projection is None:
            return 0
        return 2 * n_tokens * projection.in_features * projection.out_features


class AlbertAdapter(EncoderAdapter):
    """ALBERT: embeddings mapped to hidden size, layer groups shared across depth."""

    @property
    def layers(self) -> Sequence[LayerFn]:
        config = self.config
        groups = self.backbone.encoder.albert_layer_groups
        per_group = config.num_hidden_layers / config.num_hidden_groups
        return [groups[int(i / per_group)] for i in range(config.num_hidden_layers)]

    @property
    def pretrained_pooler(self):
        return getattr(self.backbone, "pooler", None)

    def embed(self, input_ids, token_type_ids=None):
        hidden = self.backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.backbone.encoder.embedding_hidden_mapping_in(hidden)

    def embedding_flops(self, n_tokens: int) -> int:
        mapping = self.backbone.encoder.embedding_hidden_mapping_in
        return 2 * n_tokens * mapping.in_features * mapping.out_features


class DistilBertAdapter(EncoderAdapter):
    """DistilBERT: no token types, no pooler, layers in ``transformer.layer``."""

    @property
    def num_layers(self) -> int:
        return self.config.n_layers

    @property
    def hidden_size(self) -> int:
        return self.config.dim

    @property
    def intermediate_size(self) -> int:
        return self.config.hidden_dim

    @property
    def layers(self) -> Sequence[LayerFn]:
        return list(self.backbone.transformer.layer)

    @property
    def pretrained_pooler(self):
        return None

    def embed(self, input_ids: torch.Tensor, token_type_ids=None) -> torch.Tensor:
        return self.backbone.embeddings(input_ids)

    def prefix_layer(self, layer, hidden: torch.Tensor, m: int, key_bias: torch.Tensor) -> torch.Tensor:
        """HashEE layer: ``[b, n, d]`` -> new states of the first ``m`` tokens ``[b, m, d]``."""
        att = layer.attention
        ctx = module_prefix_attention(att, att.q_lin, att.k_lin, att.v_lin, hidden, m, att.n_heads, key_bias)
        x = layer.sa_layer_norm(att.out_lin(ctx) + hidden[:, :m])
        return layer.output_layer_norm(layer.ffn(x) + x)
