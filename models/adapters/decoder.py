"""Adapter for Llama-layout causal LMs: the only place that knows how a decoder is laid out.

A Llama-layout decoder layer is pre-norm:
``h = h + o(attn(rope(q(n1(h))), rope(k(n1(h))), v(n1(h))))`` then
``h = h + down(act(gate(n2(h))) * up(n2(h)))``, with grouped-query attention (kv heads <=
heads) and rotary positions shared by all layers. Llama, Mistral and Qwen2 (biases on q/k/v)
follow it; SmolLM2 is a Llama.

The adapter runs one layer at a time against a key/value cache that it owns as two tensors
``[L, b, kv_heads, slots, head_dim]``, so the generation loop in ``models/generation.py`` can
run a layer for a subset of rows and write the key/value entries of skipped layers (state
copying) for another subset. Shape notation: b = rows, s = positions, d = hidden, t = slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ModelSpecError

DECODER_TYPES = ("llama", "mistral", "qwen2")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions. ``x [b, heads, s, hd]``, ``cos/sin [b, s, hd]``."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


@dataclass
class KVCache:
    """Keys and values of every layer: ``keys/values [L, b, kv_heads, t, hd]``; ``valid [b, t]``
    marks filled, non-padding slots (False for left padding and slots not yet written)."""

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor


class DecoderAdapter:
    """Expose a Llama-layout ``*ForCausalLM`` as embed / layer-by-layer / norm / LM head.

    Raises:
        ModelSpecError: the model is not a causal LM of a supported layout (the message names it).
    """

    def __init__(self, lm: nn.Module):
        model_type = getattr(getattr(lm, "config", None), "model_type", None)
        if model_type not in DECODER_TYPES or not hasattr(lm, "lm_head"):
            raise ModelSpecError(
                f"{type(lm).__name__} (model_type {model_type!r}) is not a causal LM with a Llama-layout "
                f"decoder; supported model types: {', '.join(DECODER_TYPES)}"
            )
        window = getattr(lm.config, "sliding_window", None)
        if window and getattr(lm.config, "use_sliding_window", True):
            raise ModelSpecError(f"{type(lm).__name__} uses sliding-window attention (window {window}), which the "
                                 f"exit loop does not implement; it attends to the whole cache")
        self.lm = lm
        self.config = lm.config
        self.base = lm.model
        self.layers = list(self.base.layers)
        first = self.layers[0].self_attn
        self.head_dim = first.head_dim
        self.num_heads = self.config.num_attention_heads
        self.num_kv_heads = self.config.num_key_value_heads
        self._folded: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # -- structure ---------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.lm.lm_head.out_features

    @property
    def final_norm(self) -> nn.Module:
        return self.base.norm

    def new_cache(self, rows: int, slots: int, like: torch.Tensor) -> KVCache:
        shape = (self.num_layers, rows, self.num_kv_heads, slots, self.head_dim)
        return KVCache(like.new_zeros(shape), like.new_zeros(shape),
                       torch.zeros(rows, slots, dtype=torch.bool, device=like.device))

    # -- pieces ------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.embed_tokens(input_ids)

    def rotary(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions [b, s]`` -> ``cos, sin [b, s, hd]``."""
        return self.base.rotary_emb(hidden, positions)

    def lm_logits(self, normed: torch.Tensor) -> torch.Tensor:
        return self.lm.lm_head(normed)

    def _qkv(self, layer: nn.Module, hidden: torch.Tensor, cos, sin):
        """``hidden [b, s, d]`` -> rotated ``q [b, h, s, hd]``, ``k, v [b, kvh, s, hd]``."""
        b, s, _ = hidden.shape
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        q = attn.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _finish(self, layer: nn.Module, hidden, attended):
        b, _, s, _ = attended.shape
        hidden = hidden + layer.self_attn.o_proj(attended.transpose(1, 2).reshape(b, s, -1))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    def prefill_layer(self, index: int, hidden: torch.Tensor, cos, sin, padding: torch.Tensor,
                      cache: KVCache | None) -> torch.Tensor:
        """Layer ``index`` (0-based) over whole left-padded prompts ``[b, s, d]``.

        ``padding [b, s]`` is 1 for real tokens. Writes the layer's keys/values to cache slots
        ``0..s-1`` when a cache is given. A padding query attends to itself only (its output is
        never read), so no row of the softmax is empty.
        """
        layer = self.layers[index]
        q, k, v = self._qkv(layer, hidden, cos, sin)
        if cache is not None:
            cache.keys[index, :, :, : k.shape[2]] = k
            cache.values[index, :, :, : v.shape[2]] = v
        s = hidden.shape[1]
        causal = torch.ones(s, s, dtype=torch.bool, device=hidden.device).tril()
        allowed = causal[None] & padding.bool()[:, None, :]
        allowed |= torch.eye(s, dtype=torch.bool, device=hidden.device)[None]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], enable_gqa=True)
        return self._finish(layer, hidden, attended)

    def decode_layer(self, index: int, hidden: torch.Tensor, cos, sin, cache: KVCache,
                     rows: torch.Tensor | None, slot: int) -> torch.Tensor:
        """Layer ``index`` for one new token per row: ``hidden [a, 1, d]`` of cache rows ``rows``
        (None = all rows). Writes the token's key/value at ``slot`` and attends to slots
        ``0..slot`` that are valid (the caller marks ``slot`` valid first)."""
        layer = self.layers[index]
        q, k, v = self._qkv(layer, hidden, cos, sin)
        if rows is None:
            cache.keys[index, :, :, slot] = k[:, :, 0]
            cache.values[index, :, :, slot] = v[:, :, 0]
            keys, values = cache.keys[index, :, :, : slot + 1], cache.values[index, :, :, : slot + 1]
            valid = cache.valid[:, : slot + 1]
        else:
            cache.keys[index, rows, :, slot] = k[:, :, 0]
            cache.values[index, rows, :, slot] = v[:, :, 0]
            keys, values = cache.keys[index, rows, :, : slot + 1], cache.values[index, rows, :, : slot + 1]
            valid = cache.valid[rows, : slot + 1]
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=valid[:, None, None, :], enable_gqa=True)
        return self._finish(layer, hidden, attended)

    def extend_layer(self, index: int, hidden: torch.Tensor, cos, sin, cache: KVCache, rows: torch.Tensor | None,
                     slots: torch.Tensor) -> torch.Tensor:
        """Layer ``index`` for ``n`` new tokens per row, each row at its own slots (self-speculative
        decoding: rows accept drafts at different rates, so their caches grow by different amounts).

        ``hidden [a, n, d]`` of cache rows ``rows`` (None = all rows), ``cos, sin [a, n, hd]``,
        ``slots [a, n]`` (increasing along n). Writes the tokens' keys/values at ``slots``; token j
        attends to the row's valid slots ``<= slots[:, j]`` (the caller marks ``slots`` valid first
        and every later slot invalid, so this is causal over the new tokens).
        """
        layer = self.layers[index]
        q, k, v = self._qkv(layer, hidden, cos, sin)
        width = int(slots.max()) + 1
        row_index = torch.arange(hidden.shape[0], device=hidden.device) if rows is None else rows
        # advanced indices around a slice put their dims first: [a, n, kvh, hd]
        cache.keys[index, row_index[:, None], :, slots] = k.transpose(1, 2)
        cache.values[index, row_index[:, None], :, slots] = v.transpose(1, 2)
        if rows is None:
            keys, values = cache.keys[index, :, :, :width], cache.values[index, :, :, :width]
            valid = cache.valid[:, :width]
        else:
            keys, values = cache.keys[index, rows, :, :width], cache.values[index, rows, :, :width]
            valid = cache.valid[rows, :width]
        causal = torch.arange(width, device=hidden.device)[None, None, :] <= slots[:, :, None]  # [a, n, t]
        allowed = valid[:, None, :] & causal
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed[:, None], enable_gqa=True)
        return self._finish(layer, hidden, attended)

    # -- state copying -------------------------------------------------------------------
    def _folded_kv(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every layer's k/v projection with its input-norm weight folded in:
        ``weight [L, d, 2 * kvh * hd]`` (``x_hat @ weight[j]`` = ``[k_j | v_j](n1_j(x))`` where
        ``x_hat`` is the RMS-normalised state) and ``bias [L, 2 * kvh * hd]`` or None."""
        if self._folded is None or self._folded[0].device != like.device or self._folded[0].dtype != like.dtype:
            weights, biases = [], []
            for layer in self.layers:
                attn, gain = layer.self_attn, layer.input_layernorm.weight
                w = torch.cat([attn.k_proj.weight, attn.v_proj.weight], 0) * gain[None, :]  # [2kv, d]
                weights.append(w.t())
                if attn.k_proj.bias is not None:
                    biases.append(torch.cat([attn.k_proj.bias, attn.v_proj.bias]))
            weight = torch.stack(weights).detach().to(like)
            bias = torch.stack(biases).detach().to(like) if biases else None
            self._folded = (weight, bias)
        return self._folded

    def rms_normalise(self, hidden: torch.Tensor) -> torch.Tensor:
        """The input norms' shared part, ``x / rms(x)``; each layer's gain is folded into its weights."""
        eps = self.layers[0].input_layernorm.variance_epsilon
        x = hidden.float()  # as HF's RMSNorm: normalise in fp32
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(hidden.dtype)

    def copy_state(self, state: torch.Tensor, first: int, cos, sin, cache: KVCache, rows: torch.Tensor, slot: int) -> None:
        """State copying: rows ``rows`` exited before 0-based layer ``first``; their copied state
        ``state [g, d]`` feeds layers ``first..L-1`` through each layer's own input norm, k/v
        projections and rotary positions (``cos, sin [g, 1, hd]``), written at ``slot``.
        One batched matmul covers all skipped layers."""
        weight, bias = self._folded_kv(state)
        kv = torch.einsum("gd,ldc->glc", self.rms_normalise(state), weight[first:])  # [g, L-first, 2kv]
        if bias is not None:
            kv = kv + bias[first:]
        g, skipped, _ = kv.shape
        kv = kv.view(g, skipped, 2, self.num_kv_heads, self.head_dim)
        keys = apply_rope(kv[:, :, 0], cos, sin)  # [g, L-first, kvh, hd]; cos [g, 1, hd] broadcasts over layers
        layer_index = torch.arange(first, self.num_layers, device=state.device)
        cache.keys[layer_index[None, :], rows[:, None], :, slot] = keys
        cache.values[layer_index[None, :], rows[:, None], :, slot] = kv[:, :, 1]

    # -- FLOPs (matmul multiply-adds x 2, as FlopCounterMode counts) ------------------------
    def layer_flops(self, keys: int) -> int:
        """One token through one layer attending to ``keys`` cache slots."""
        d, qd, kvd = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        ffn = self.config.intermediate_size
        return 2 * (d * qd + 2 * d * kvd + qd * d + 3 * d * ffn) + 4 * keys * qd

    def copy_flops(self) -> int:
        """Key/value of one skipped layer from a copied state."""
        return 2 * 2 * self.hidden_size * self.num_kv_heads * self.head_dim

    def lm_head_flops(self) -> int:
        return 2 * self.hidden_size * self.vocab_size
