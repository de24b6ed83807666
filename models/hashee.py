"""HashEE: hash-based token-level early exiting (Sun et al., ACL 2022; arXiv 2203.01670).

Paper map:

| paper                                   | code                                            |
| --------------------------------------- | ----------------------------------------------- |
| hash lookup table token -> exit layer   | ``exit_table`` ``[V]`` (1-based layers)          |
| B buckets, layer 1 + b * floor(L / B)   | ``bucket_layers``                               |
| Rand-cons / Rand-incons                 | ``build_random_hash`` (two seeds for incons)     |
| Frequency hash                          | ``build_frequency_hash`` (``equal_mass`` option) |
| MI hash                                 | ``build_mi_hash``                               |
| Clustered hash                          | ``build_clustered_hash``                        |
| Eqs. (1)-(5): q from remaining tokens, K/V from all, Copy | ``prefix_token_layers`` (prefix path) |
| Table 10 saved MACs                     | ``hashee_layer_flops``                          |
| seq2seq (Table 4): hash exits in the encoder, decoder as is | ``HashEEEncoder``          |

HashEE keeps its own token-level loop (``prefix_token_layers``) instead of the core's
``MultiExitModel.forward`` / ``early_exit``: it sorts tokens once and runs each layer on a
prefix through ``adapter.prefix_layer`` (queries on the running tokens, keys/values on all),
which has no counterpart in sequence-level exiting; threading it through the core loop would
add a token-level branch to every step there. Two models share that loop: ``HashEEModel``
(a classifier head on the last layer) and ``HashEEEncoder`` (the encoder of a seq2seq model,
whose token states feed the model's own, untouched decoder). ``masked_token_exit_forward``
is the reference path the prefix loop is tested against, on purpose written independently.

Shape notation: b = batch, n = sequence length, m = running tokens (prefix), d = hidden,
V = vocabulary, L = layers, B = buckets.

Token-level exit: a token with exit layer e is updated by layers 1..e, then its state is
frozen (copied upward) but still serves as key/value for the tokens that keep running.
Special tokens ([CLS], [SEP], [PAD], ...) and tokens unseen when the table was built run all
L layers. Each sequence's tokens are sorted once, stably, by exit layer descending ([CLS]
first), so the tokens still running at layer l are a prefix of length m_l (batch max);
queries, attention output projection, LayerNorms and FFN run on that prefix only.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from models.adapters import ADAPTERS, EncoderAdapter, adapter_for
from models.errors import ExitflowError
from models.exiting import EarlyExitOutput, MultiExitConfig, MultiExitModel, MultiExitOutput

HASH_KINDS = ("random", "random_incons", "frequency", "mi", "clustered")


class HashTableError(ExitflowError, ValueError):
    """A hash table does not fit the model/tokenizer, or cannot be built from the input."""


# ---------------------------------------------------------------------------- hash tables
def bucket_layers(num_layers: int, num_buckets: int) -> list[int]:
    """Exit layer of each bucket: bucket b exits after layer ``1 + b * floor(L / B)``."""
    if not 1 <= num_buckets <= num_layers:
        raise HashTableError(f"hashee.buckets must be between 1 and the number of layers ({num_layers}); got {num_buckets}")
    return [1 + b * (num_layers // num_buckets) for b in range(num_buckets)]


def _table_from_ranking(ranked_ids: Sequence[int], vocab_size: int, num_layers: int, num_buckets: int,
                        special_ids: Iterable[int], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Split ``ranked_ids`` (earliest exit first) into B groups; everything else runs all L layers.

    Groups have equal numbers of types, or equal total ``weights`` (token mass) when given.
    """
    layers = bucket_layers(num_layers, num_buckets)
    table = torch.full((vocab_size,), num_layers, dtype=torch.long)
    ranked = np.asarray(list(ranked_ids), dtype=np.int64)
    if ranked.size == 0:
        raise HashTableError("no observed tokens to hash: the training split is empty")
    if weights is None:
        groups = np.array_split(ranked, num_buckets)
    else:
        w = np.asarray(weights, dtype=np.float64)
        start = np.cumsum(w) - w  # token mass before each type
        bucket_of = np.minimum(start * num_buckets // w.sum(), num_buckets - 1).astype(int)
        groups = [ranked[bucket_of == b] for b in range(num_buckets)]
    for b, ids in enumerate(groups):
        table[torch.as_tensor(ids, dtype=torch.long)] = layers[b]
    table[torch.as_tensor(sorted(set(special_ids)), dtype=torch.long)] = num_layers
    return table


def build_random_hash(vocab_size: int, num_layers: int, num_buckets: int, special_ids: Iterable[int], seed: int) -> torch.Tensor:
    """Rand-cons: one uniform random bucket per vocabulary id (seeded)."""
    layers = torch.tensor(bucket_layers(num_layers, num_buckets))
    g = torch.Generator().manual_seed(seed)
    table = layers[torch.randint(0, num_buckets, (vocab_size,), generator=g)]
    table[torch.as_tensor(sorted(set(special_ids)), dtype=torch.long)] = num_layers
    return table


def token_counts(token_lists: Iterable[Sequence[int]], special_ids: Iterable[int]) -> Counter:
    special = set(special_ids)
    return Counter(t for tokens in token_lists for t in tokens if t not in special)


def build_frequency_hash(token_lists, vocab_size, num_layers, num_buckets, special_ids, equal_mass: bool = False) -> torch.Tensor:
    """Frequency hash: observed types sorted by count (desc, ties by id); most frequent exit earliest.

    Default: B groups with equal numbers of types; ``equal_mass``: equal token-occurrence mass.
    """
    counts = token_counts(token_lists, special_ids)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    weights = [counts[t] for t in ranked] if equal_mass else None
    return _table_from_ranking(ranked, vocab_size, num_layers, num_buckets, special_ids, weights)


def discretise_labels(labels: Sequence[float], bins: int = 5) -> np.ndarray:
    """Regression labels -> ``bins`` equal-frequency bins (quantile edges)."""
    values = np.asarray(labels, dtype=np.float64)
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def mutual_information(token_lists, labels, special_ids) -> dict[int, float]:
    """MI (nats) between "this occurrence is token t" and the instance label, over all occurrences.

    Every occurrence of every token counts (a token repeated in a sentence counts each time).
    """
    special = set(special_ids)
    joint: Counter = Counter()
    per_label: Counter = Counter()
    for tokens, y in zip(token_lists, labels):
        for t in tokens:
            if t not in special:
                joint[(t, y)] += 1
                per_label[y] += 1
    total = sum(per_label.values())
    if total == 0:
        raise HashTableError("no observed tokens to compute mutual information: the training split is empty")
    per_token: Counter = Counter()
    for (t, _), c in joint.items():
        per_token[t] += c
    mi = {}
    for t, n_t in per_token.items():
        value = 0.0
        for y, n_y in per_label.items():
            n_ty = joint.get((t, y), 0)
            for n_xy, n_x in ((n_ty, n_t), (n_y - n_ty, total - n_t)):  # x = 1 (is t), x = 0 (not t)
                if n_xy > 0:
                    value += n_xy / total * math.log(n_xy * total / (n_x * n_y))
        mi[t] = value
    return mi


def build_mi_hash(token_lists, labels, vocab_size, num_layers, num_buckets, special_ids, regression: bool = False) -> torch.Tensor:
    """MI hash: highest mutual information with the label exits earliest; equal-type groups.

    Multi-class labels are used as they are; regression labels are binned into 5 bins.
    """
    labels = discretise_labels(labels) if regression else np.asarray(labels)
    mi = mutual_information(token_lists, labels.tolist(), special_ids)
    ranked = sorted(mi, key=lambda t: (-mi[t], t))
    return _table_from_ranking(ranked, vocab_size, num_layers, num_buckets, special_ids)


def build_clustered_hash(embeddings: torch.Tensor, observed_ids: Iterable[int], num_layers: int, num_buckets: int,
                         special_ids: Iterable[int], seed: int) -> torch.Tensor:
    """Clustered hash: k-means (B clusters, seeded) on input word embeddings of the observed vocabulary;
    clusters ordered by average L2 norm ascending; the smallest-norm cluster exits earliest.
    """
    from sklearn.cluster import KMeans

    special = set(special_ids)
    ids = np.array(sorted(t for t in set(observed_ids) if t not in special), dtype=np.int64)
    if ids.size < num_buckets:
        raise HashTableError(f"clustered hash needs at least {num_buckets} observed tokens, found {ids.size}")
    vectors = embeddings[torch.as_tensor(ids)].detach().double().cpu().numpy()
    assign = KMeans(n_clusters=num_buckets, n_init=10, random_state=seed).fit_predict(vectors)
    norms = np.linalg.norm(vectors, axis=1)
    order = sorted(range(num_buckets), key=lambda c: (norms[assign == c].mean(), c))
    layers = bucket_layers(num_layers, num_buckets)
    table = torch.full((embeddings.shape[0],), num_layers, dtype=torch.long)
    for rank, c in enumerate(order):
        table[torch.as_tensor(ids[assign == c])] = layers[rank]
    table[torch.as_tensor(sorted(special), dtype=torch.long)] = num_layers
    return table


# ---------------------------------------------------------------------------- FLOPs
def hashee_layer_flops(n: int, m: int, hidden: int, intermediate: int) -> int:
    """Matmul FLOPs of one layer with n tokens of which m still run (Table 10 applied to the full layer).

    Saved vs the full layer: query and output projections ``2 (n-m) d^2``, attention
    ``2 * 2 n (n-m) d``, FFN ``2 * 2 (n-m) d d_ff`` (FLOPs = 2 MACs). Table 10's LayerNorm and
    per-head softmax terms are element-wise and left out, as in ``models.flops``.
    """
    d = hidden
    return 2 * (m * d * d + 2 * n * d * d + 2 * m * n * d + m * d * d + 2 * m * d * intermediate)


def hashee_encoder_flops(adapter: EncoderAdapter, token_exit_layers: Sequence[int]) -> int:
    """Encoder FLOPs (embedding + L layers) for one un-padded sequence whose tokens exit at
    ``token_exit_layers``; with every token at layer L this is the full encoder."""
    n = len(token_exit_layers)
    exits = np.asarray(token_exit_layers)
    total = adapter.embedding_flops(n)
    for layer in range(1, adapter.num_layers + 1):
        total += hashee_layer_flops(n, int((exits >= layer).sum()), adapter.hidden_size, adapter.intermediate_size)
    return total


def hashee_instance_flops(model: MultiExitModel, token_exit_layers: Sequence[int]) -> int:
    """FLOPs for one un-padded sequence whose tokens exit at ``token_exit_layers`` (last head only)."""
    return hashee_encoder_flops(model.adapter, token_exit_layers) + model.heads[-1].flops(len(token_exit_layers))


# ---------------------------------------------------------------------------- token loop
def token_exit_layers(exit_table: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[b, n]`` exit layer per token from the table ``[V]``; padding gets 0 (never runs)."""
    return exit_table[input_ids] * attention_mask.long()


def _exit_order(exits: torch.Tensor) -> torch.Tensor:
    """``[b, n]`` one stable sort per sequence by exit layer, descending ([CLS] first)."""
    return torch.sort(exits, dim=1, descending=True, stable=True).indices


def prefix_token_layers(adapter: EncoderAdapter, exits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None = None, trim: bool = False):
    """Yield ``(k, hidden [b, n, d], padding [b, n])`` after each layer k, tokens sorted by exit layer.

    Eqs. (1)-(5): one stable sort per sequence makes the running tokens a prefix ([CLS] first);
    each layer updates only that prefix (queries, output projection, LayerNorms, FFN) with
    keys/values from all tokens, and copies the exited tokens' states upward.

    Args:
        adapter: an adapter with ``prefix_layer`` (see ``check_token_level``).
        exits: ``[b, n]`` 1-based exit layer per token, 0 for padding (``token_exit_layers``).
        trim: drop the padded tail no row needs (then n is the longest row).
    """
    order = _exit_order(exits)  # [b, n]
    hidden = adapter.embed(input_ids, token_type_ids)
    hidden = hidden.gather(1, order[..., None].expand_as(hidden))
    exits, padding = exits.gather(1, order), attention_mask.gather(1, order)
    if trim:
        n = int(padding.sum(1).max())
        hidden, exits, padding = hidden[:, :n], exits[:, :n], padding[:, :n]
    key_bias = torch.zeros(padding.shape, dtype=hidden.dtype, device=hidden.device)
    key_bias = key_bias.masked_fill(padding == 0, torch.finfo(hidden.dtype).min)[:, None, None, :]  # [b, 1, 1, n]
    for k, layer in enumerate(adapter.layers, start=1):
        running = exits >= k  # [b, n]
        m = int(running.sum(1).max())
        if m > 0:
            updated = adapter.prefix_layer(layer, hidden, m, key_bias)  # [b, m, d]
            hidden = torch.cat([torch.where(running[:, :m, None], updated, hidden[:, :m]), hidden[:, m:]], dim=1)
        yield k, hidden, padding


def hashee_token_states(adapter: EncoderAdapter, exits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Last-layer states ``[b, n, d]`` of the prefix path, un-permuted back to the original token order.

    An exited token carries the state of its exit layer (the paper's Copy); padding positions
    keep their embedding (masked by every consumer).
    """
    for _, hidden, _ in prefix_token_layers(adapter, exits, input_ids, attention_mask, token_type_ids):
        pass
    order = _exit_order(exits)
    return torch.empty_like(hidden).scatter_(1, order[..., None].expand_as(hidden), hidden)


def check_token_level(adapter: EncoderAdapter, exit_table: torch.Tensor) -> None:
    """Refuse a backbone without a prefix layer, or a table that does not fit it (``check_table``)."""
    if not hasattr(adapter, "prefix_layer"):
        families = ", ".join(sorted(name for name, cls in ADAPTERS.items() if hasattr(cls, "prefix_layer")))
        raise HashTableError(f"HashEE token-level exit is not available for {adapter.config.model_type!r}; use {families}")
    check_table(exit_table, adapter.config.vocab_size, adapter.num_layers)


# ---------------------------------------------------------------------------- model
class HashEEModel(MultiExitModel):
    """A multi-exit model whose tokens exit at layers fixed by ``exit_table``; predicts with head L.

    The intermediate heads exist (same module layout as every exitflow model) but HashEE trains
    only the last one (objective ``single``) and inference runs head L only.

    Args:
        backbone: HF encoder with a token-level adapter (BERT, RoBERTa, ELECTRA, DistilBERT, BART's encoder).
        config: exits config (``lte`` must be False: HashEE has no learned exit).
        exit_table: ``[V]`` 1-based exit layer per token id.
    """

    def __init__(self, backbone: nn.Module, config: MultiExitConfig, exit_table: torch.Tensor):
        super().__init__(backbone, config)
        check_token_level(self.adapter, exit_table)
        self.register_buffer("exit_table", exit_table.clone().long(), persistent=True)

    def token_exit_layers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[b, n]`` exit layer per token from the table; padding gets 0 (never runs)."""
        return token_exit_layers(self.exit_table, input_ids, attention_mask)

    def _sorted_layers(self, input_ids, attention_mask, token_type_ids=None, trim: bool = False):
        """``prefix_token_layers`` with this model's table."""
        exits = self.token_exit_layers(input_ids, attention_mask)
        return prefix_token_layers(self.adapter, exits, input_ids, attention_mask, token_type_ids, trim)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> MultiExitOutput:
        """Token-level exiting with prefix computation; every head's output ``[L, b, c]`` (training)."""
        logits, states = [], []
        for k, hidden, padding in self._sorted_layers(input_ids, attention_mask, token_type_ids):
            out, state = self.heads[k - 1](hidden, padding)
            logits.append(out)
            states.append(state)
        return MultiExitOutput(torch.stack(logits), torch.stack(states))

    def token_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Last-layer states ``[b, n, d]`` un-permuted back to the original token order."""
        exits = self.token_exit_layers(input_ids, attention_mask)
        return hashee_token_states(self.adapter, exits, input_ids, attention_mask, token_type_ids)

    @torch.no_grad()
    def early_exit(self, input_ids, attention_mask, token_type_ids=None, criterion=None) -> EarlyExitOutput:
        """HashEE inference: token-level exits, prediction from head L only (no sequence-level criterion)."""
        if criterion is not None:
            raise ValueError("HashEE exits tokens by its hash table; sequence-level criteria do not apply")
        for _, hidden, padding in self._sorted_layers(input_ids, attention_mask, token_type_ids, trim=True):
            pass
        logits, _ = self.heads[-1](hidden, padding)
        return EarlyExitOutput(logits, torch.full((input_ids.shape[0],), self.num_layers, device=input_ids.device))


def check_table(exit_table: torch.Tensor, vocab_size: int, num_layers: int) -> None:
    """Refuse a table built for another vocabulary or depth."""
    if exit_table.ndim != 1 or exit_table.shape[0] != vocab_size:
        raise HashTableError(f"hash table has {exit_table.shape[0]} entries but the model's vocabulary has {vocab_size}: "
                             "it was built for another tokenizer; rebuild it (exitflow hash)")
    if int(exit_table.max()) > num_layers or int(exit_table.min()) < 1:
        raise HashTableError(f"hash table exit layers span {int(exit_table.min())}..{int(exit_table.max())} but must lie in "
                             f"1..{num_layers} (the model's layers): it was built for another depth; rebuild it")


class HashEEEncoder(nn.Module):
    """The encoder of a seq2seq model with HashEE token exits (paper section 4.3, Table 4).

    Only the encoder exits: each token runs layers 1..e (e from ``exit_table``) on the prefix
    path and is copied upward after; the decoder is the model's own, untouched, and reads the
    output through cross-attention like any encoder output::

        enc = HashEEEncoder(bart, table)(input_ids, attention_mask)
        bart(encoder_outputs=enc, attention_mask=attention_mask, decoder_input_ids=...)
        bart.generate(encoder_outputs=enc, attention_mask=attention_mask)

    Args:
        backbone: the seq2seq model or its encoder (``bart``: ``BartForConditionalGeneration``,
            ``BartModel`` or ``BartEncoder``); its parameters are shared, not copied.
        exit_table: ``[V]`` 1-based exit layer per token id, in 1..L (L = encoder layers).

    Raises:
        HashTableError: the backbone has no token-level adapter, or the table does not fit it.
    """

    def __init__(self, backbone: nn.Module, exit_table: torch.Tensor):
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter_for(backbone)
        check_token_level(self.adapter, exit_table)
        self.register_buffer("exit_table", exit_table.clone().long(), persistent=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        """``[b, n]`` ids and 1/0 padding mask -> ``last_hidden_state [b, n, d]`` in token order."""
        exits = token_exit_layers(self.exit_table, input_ids, attention_mask)
        return BaseModelOutput(last_hidden_state=hashee_token_states(self.adapter, exits, input_ids, attention_mask))


def masked_token_exit_forward(model: nn.Module, input_ids, attention_mask, exit_table, token_type_ids=None):
    """Reference path: every layer on all tokens, exited tokens' states frozen (no sorting).

    ``model`` is anything with an ``adapter`` (``HashEEModel``, ``HashEEEncoder``).

    Returns the last layer's hidden states ``[b, n, d]`` in the original token order.
    """
    exits = exit_table[input_ids] * attention_mask.long()
    hidden = model.adapter.embed(input_ids, token_type_ids)
    mask = model.adapter.attention_mask(attention_mask, hidden)
    for k, layer in enumerate(model.adapter.layers, start=1):
        hidden = torch.where((exits >= k)[..., None], layer(hidden, mask), hidden)
    return hidden
