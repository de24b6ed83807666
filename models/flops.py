"""Analytic FLOPs of multi-exit inference, per instance at its un-padded length.

Counts matmul FLOPs (2 per multiply-add), the quantity ``torch.utils.flop_counter``
reports; element-wise work (softmax, LayerNorm, GELU) is left out of both, as in
nanoGPT/PaLM-style estimates. For one encoder layer on n tokens with hidden d and FFN d_ff:

    Q, K, V, O projections   4 * 2 n d^2
    scores and weighted sum  2 * 2 n^2 d
    FFN                      2 * 2 n d d_ff

A criterion is charged what it runs (as ``MultiExitModel.early_exit`` runs it): the exit head
at every layer it decides at (``criterion.needs_head``; a static exit only at its layer) and at
the exit layer, the exit scorer (LTE, policy) only at those layers and only when the criterion
reads it (entropy on an LTE model never runs LTE), plus what an exit stack with memory
(Past-Future) must update at every layer. The full model runs the last head only.
"""

from __future__ import annotations

import torch

from models.criteria import ExitCriterion, Static
from models.exiting import MultiExitModel


def layer_flops(n_tokens: int, hidden: int, intermediate: int) -> int:
    """Matmul FLOPs of one encoder layer on ``n_tokens`` tokens."""
    n, d = n_tokens, hidden
    return 8 * n * d * d + 4 * n * n * d + 4 * n * d * intermediate


def instance_flops(model: MultiExitModel, n_tokens: int, exit_layer: int, criterion: ExitCriterion | None = None) -> int:
    """FLOPs for one instance of length ``n_tokens`` that ``criterion`` exits after ``exit_layer``
    (1-based); ``criterion=None`` is the full model (all layers, the last head)."""
    criterion = criterion if criterion is not None else Static(model.num_layers)
    reads_scorer = model.scorer is not None and criterion.module is not None
    adapter = model.adapter
    total = adapter.embedding_flops(n_tokens)
    total += exit_layer * layer_flops(n_tokens, adapter.hidden_size, adapter.intermediate_size)
    for k in range(1, exit_layer + 1):
        decide = k == exit_layer or criterion.needs_head(k)
        total += model.heads.flops(k, n_tokens, decide=decide)
        if decide and reads_scorer:
            total += model.scorer.flops_at(k, model.num_layers)
    return total


def flops_per_instance(model: MultiExitModel, lengths: torch.Tensor, exit_layers: torch.Tensor,
                       criterion: ExitCriterion | None = None) -> torch.Tensor:
    """``[n]`` FLOPs for rows with un-padded ``lengths [n]`` that ``criterion`` exits at ``exit_layers [n]``."""
    cache: dict[tuple[int, int], int] = {}
    out = []
    for n, k in zip(lengths.tolist(), exit_layers.tolist()):
        if (n, k) not in cache:
            cache[(n, k)] = instance_flops(model, int(n), int(k), criterion)
        out.append(cache[(n, k)])
    return torch.tensor(out, dtype=torch.float64)


def full_model_flops(model: MultiExitModel, lengths: torch.Tensor) -> torch.Tensor:
    """``[n]`` FLOPs of the full model: all L layers and the last head only."""
    return flops_per_instance(model, lengths, torch.full_like(lengths, model.num_layers))
