"""Prefix attention for token-level exits (HashEE): queries from the tokens still running,
keys and values from every token (exited ones keep their last state).

Shape notation: b = batch, n = tokens, m = running tokens (a prefix after sorting), d = hidden,
h = heads, hs = d / h.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def prefix_attention(q_proj, k_proj, v_proj, hidden: torch.Tensor, m: int, num_heads: int, key_bias: torch.Tensor,
                     dropout: float, eager: bool = False) -> torch.Tensor:
    """Multi-head attention with queries from the first ``m`` tokens and keys/values from all n.

    ``hidden [b, n, d]`` -> context ``[b, m, d]`` (before the output projection). ``eager`` uses
    explicit matmuls (what ``FlopCounterMode`` can count), otherwise fused SDPA.
    """
    b, n, d = hidden.shape
    hs = d // num_heads
    q = q_proj(hidden[:, :m]).view(b, m, num_heads, hs).transpose(1, 2)  # [b, h, m, hs]
    k = k_proj(hidden).view(b, n, num_heads, hs).transpose(1, 2)  # [b, h, n, hs]
    v = v_proj(hidden).view(b, n, num_heads, hs).transpose(1, 2)
    if eager:
        weights = (q @ k.transpose(-1, -2) / math.sqrt(hs) + key_bias).softmax(-1)  # [b, h, m, n]
        ctx = F.dropout(weights, dropout, training=dropout > 0) @ v
    else:
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias, dropout_p=dropout)
    return ctx.transpose(1, 2).reshape(b, m, d)


def module_prefix_attention(attention: nn.Module, q_proj, k_proj, v_proj, hidden: torch.Tensor, m: int, num_heads: int,
                            key_bias: torch.Tensor) -> torch.Tensor:
    """``prefix_attention`` with the dropout and kernel an HF attention module is set to.

    ``attention.dropout`` is an ``nn.Dropout`` (BERT, DistilBERT) or a probability (BART);
    ``attention.config._attn_implementation == "eager"`` selects the explicit matmuls.
    """
    p = attention.dropout.p if isinstance(attention.dropout, nn.Dropout) else float(attention.dropout)
    eager = attention.config._attn_implementation == "eager"
    return prefix_attention(q_proj, k_proj, v_proj, hidden, m, num_heads, key_bias, p if attention.training else 0.0, eager)
