"""Self-speculative decoding: draft from an early layer, verify with the rest; lossless greedy.

LayerSkip (Elhoushi et al., 2024, arXiv 2404.16710), section "self-speculative decoding", and
Kangaroo (Liu et al., 2024, arXiv 2404.18911): the model's own first E layers plus an exit head
are the draft model, its remaining layers the verifier, and the verification reuses the draft's
keys/values of layers 1..E and its layer-E states. Our own code, batched (LayerSkip and Kangaroo
decode one row at a time). Paper map:

| paper                                            | code                                      |
| ------------------------------------------------ | ----------------------------------------- |
| draft exit layer E, draft length d               | ``draft_layer``, ``draft_length``         |
| draft: layers 1..E + exit head (LM head, shared) | ``DraftHead`` (optionally trained exit    |
|                                                  | state, optionally a reduced vocabulary)   |
| verify: layers E+1..L, reusing the draft's cache | ``decode_self_speculative`` step 2        |
| accept the longest matching prefix + 1 token     | step 3 (greedy acceptance only)           |
| cache rollback                                   | step 4: rejected slots marked invalid     |

One decode step, per row (p = the row's next free cache slot, x_0 = its last emitted token,
which has not run through the model yet):

1. draft: for i = 0..d-1, x_i runs layers 1..E at slot p+i; x_{i+1} = argmax DraftHead(h_E(x_i));
2. verify: x_d runs layers 1..E at slot p+d; then layers E+1..L run once over the d+1 positions
   x_0..x_d from their kept layer-E states (one pass per layer, d+1 positions per row), writing
   those layers' keys/values at slots p..p+d; y_{i+1} = argmax LM-head(norm(h_L(x_i)));
3. accept: n = the longest prefix with x_i = y_i (i = 1..n, 0 <= n <= d); emit y_1..y_{n+1}
   (= x_1..x_n and the verifier's next token): exactly what full-depth greedy decoding emits,
   since y_{i+1} is the full model's greedy token after a prefix equal to its own;
4. rollback: slots p+n+1..p+d hold keys/values of rejected tokens (in every layer, 1..E from
   the draft and E+1..L from the verification): the row's next free slot moves back to p+n+1
   (the next step, with x_0 = y_{n+1}, overwrites them) and they are marked invalid, so the
   valid cache equals plain decoding's after the same emitted tokens at every step.

Batching: every row drafts d tokens per step, but accepts its own n, so rows' caches grow by
different amounts. Each row keeps its own next free slot on the adapter's per-row valid-slot
cache; ``DecoderAdapter.extend_layer`` writes each row at its own slots and masks attention per
row (valid slots up to the query's own). Position ids are slot minus the row's left padding.

Cost accounting per row and step, in layer applications: the draft runs d * E one-position
layer passes; the verification E one-position passes (x_d) and L - E passes over d + 1
positions. So ``layer_passes`` = d * E + L sequential layer calls (a latency proxy where a
layer over a few positions costs about one position's, as for small batches), and
``token_layers`` = d * E + E + (d + 1) * (L - E) layer applications to one token (a FLOPs proxy:
at full acceptance it equals L per token, so the speed-up comes only from running several
positions per pass). Heads: d draft heads and one full LM head over d + 1 positions per step.

Floating point: the verifier runs d + 1 positions in one matmul where plain decoding runs one,
so its logits may differ in the last bits; greedy tokens can then differ only at an exact near
tie of the top two logits (as between any two implementations of the same model).

Shape notation: b = rows, a = running rows, s = prompt width, d = hidden (``dm`` where it meets
the draft length d), t = cache slots, V = vocabulary, k = draft vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from models.adapters.decoder import DecoderAdapter
from models.generation import DecoderExits, GenerationError, _prefill


def check_speculative(draft_layer: int, draft_length: int, num_layers: int) -> None:
    """Raises GenerationError naming the ``generate.speculative`` key when E is outside 1..L-1
    or d < 1."""
    if not 1 <= draft_layer <= num_layers - 1:
        raise GenerationError(f"generate.speculative.draft_layer: {draft_layer} is outside 1..{num_layers - 1} "
                              f"(the model has {num_layers} layers and the verifier needs at least the last one); "
                              f"choose a layer in 1..{num_layers - 1}")
    if draft_length < 1:
        raise GenerationError(f"generate.speculative.draft_length: must be >= 1 (tokens drafted per step); got {draft_length}")


def frequent_tokens(sequences: Iterable[list[int]], size: int, always: Iterable[int] = ()) -> torch.Tensor:
    """The draft vocabulary: ``always`` (e.g. the end tokens) plus the most frequent tokens of
    ``sequences`` (ties by token id), ``size`` ids in all (fewer when fewer tokens occur) -> ``[k]`` long."""
    keep = list(dict.fromkeys(int(t) for t in always))
    counts = Counter(int(t) for seq in sequences for t in seq)
    for token, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(keep) >= size:
            break
        if token not in keep:
            keep.append(token)
    return torch.tensor(keep[:max(size, len(set(always)))], dtype=torch.long)


class DraftHead(nn.Module):
    """Draft tokens from a layer-E state: exit state (the model's final norm, or a trained exit
    state such as ``DecoderExits.normed``) then the LM head, over the whole vocabulary or over
    ``vocab [k]`` token ids only (rows of the LM head's weight: a k/V share of its cost).

    ``forward(hidden [a, d]) -> tokens [a]`` (vocabulary ids).
    """

    def __init__(self, adapter: DecoderAdapter, exit_state: nn.Module | None = None, vocab: torch.Tensor | None = None):
        super().__init__()
        self.adapter = adapter
        self.exit_state = exit_state if exit_state is not None else adapter.final_norm
        head = adapter.lm.lm_head
        if vocab is None:
            self.vocab = self.weight = self.bias = None
        else:
            vocab = torch.as_tensor(vocab, dtype=torch.long, device=head.weight.device)
            if vocab.numel() == 0 or int(vocab.min()) < 0 or int(vocab.max()) >= adapter.vocab_size:
                raise GenerationError(f"generate.speculative.draft_vocab: token ids must lie in 0..{adapter.vocab_size - 1}")
            self.vocab = vocab
            self.weight = head.weight.detach()[vocab]  # [k, d]
            self.bias = None if head.bias is None else head.bias.detach()[vocab]

    @classmethod
    def from_exits(cls, exits: DecoderExits, layer: int, vocab: torch.Tensor | None = None) -> DraftHead:
        """The trained exit at ``layer`` (an exit point of ``exits``) as the draft's exit state."""
        if layer not in exits.points[:-1]:
            raise GenerationError(f"generate.speculative.draft_layer: {layer} is not one of the trained exit points "
                                  f"{exits.points[:-1]}; choose one, or draft through the shared final norm")
        point = exits.points.index(layer)
        return cls(exits.adapter, _ExitState(exits, point), vocab)

    @property
    def vocab_share(self) -> float:
        """Draft head cost as a share of the full LM head's."""
        return 1.0 if self.vocab is None else self.vocab.numel() / self.adapter.vocab_size

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        normed = self.exit_state(hidden)
        if self.vocab is None:
            return self.adapter.lm_logits(normed).argmax(-1)
        logits = normed @ self.weight.t()  # [a, k]
        if self.bias is not None:
            logits = logits + self.bias
        return self.vocab[logits.argmax(-1)]


class _ExitState(nn.Module):
    def __init__(self, exits: DecoderExits, point: int):
        super().__init__()
        self.exits, self.point = exits, point

    def forward(self, hidden):
        return self.exits.normed(self.point, hidden)


@dataclass
class SpeculativeResult:
    """``tokens [b, T]`` (``pad_id`` after a row's end; identical to full-depth greedy decoding),
    ``lengths [b]``, ``accepted [b, T-1]`` (accepted drafts n of each decode step, -1 after the
    row's last step), ``steps [b]`` (decode steps per row). The first token of every row comes
    from the prefill; decode tokens are ``lengths - 1``."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    accepted: torch.Tensor
    steps: torch.Tensor
    draft_layer: int
    draft_length: int
    num_layers: int
    extra: dict = field(default_factory=dict)

    def sequences(self) -> list[list[int]]:
        return [self.tokens[i, : int(n)].tolist() for i, n in enumerate(self.lengths)]

    @property
    def decode_tokens(self) -> torch.Tensor:
        return self.lengths - 1

    def accepted_per_step(self, row: int) -> list[int]:
        return self.accepted[row, : int(self.steps[row])].tolist()

    def layer_passes(self) -> torch.Tensor:
        """Sequential layer calls per row: (d * E + L) per step -> ``[b]``."""
        return self.steps * (self.draft_length * self.draft_layer + self.num_layers)

    def token_layers(self) -> torch.Tensor:
        """Layer applications to one token per row: (d * E + E + (d + 1)(L - E)) per step -> ``[b]``."""
        d, E, L = self.draft_length, self.draft_layer, self.num_layers
        return self.steps * (d * E + E + (d + 1) * (L - E))

    def cost(self, head_layers: float, draft_head_layers: float, position_cost: float) -> float:
        """Decode cost in layer units over all rows: a layer or head pass over m positions costs
        ``1 + position_cost * (m - 1)`` one-position passes; one full LM head costs
        ``head_layers`` layers, one draft head ``draft_head_layers``."""
        d, E, L = self.draft_length, self.draft_layer, self.num_layers
        wide = 1 + position_cost * d  # a pass over d + 1 positions
        per_step = d * E + E + (L - E) * wide + d * draft_head_layers + head_layers * wide
        return float(self.steps.sum()) * per_step

    def stats(self, head_layers: float = 0.0, draft_head_layers: float = 0.0, position_cost: float = 0.0) -> dict:
        """Acceptance and cost, over all rows: ``acceptance_rate`` (accepted / drafted),
        ``mean_accepted`` (drafts accepted per step), ``tokens_per_step`` (emitted decode tokens per
        step, at most d + 1), ``layer_passes_per_token`` and ``token_layers_per_token`` (full depth: L
        each), ``cost_per_token`` and ``full_cost_per_token`` in layer units (``cost``)."""
        steps, tokens = int(self.steps.sum()), int(self.decode_tokens.sum())
        accepted = int(self.accepted.clamp(min=0).sum())
        full = self.num_layers + head_layers
        return {"draft_layer": self.draft_layer, "draft_length": self.draft_length, "steps": steps,
                "decode_tokens": tokens, "acceptance_rate": accepted / max(1, steps * self.draft_length),
                "mean_accepted": accepted / max(1, steps), "tokens_per_step": tokens / max(1, steps),
                "layer_passes_per_token": int(self.layer_passes().sum()) / max(1, tokens),
                "token_layers_per_token": int(self.token_layers().sum()) / max(1, tokens),
                "cost_per_token": self.cost(head_layers, draft_head_layers, position_cost) / max(1, tokens),
                "full_cost_per_token": full}


@torch.no_grad()
def decode_self_speculative(adapter: DecoderAdapter, input_ids: torch.Tensor, padding: torch.Tensor, draft_layer: int,
                            draft_length: int, max_new_tokens: int, eos_ids: list[int], pad_id: int,
                            draft_head: DraftHead | None = None, keep_cache: bool = False) -> SpeculativeResult:
    """Greedy self-speculative decoding of left-padded prompts (module docstring: steps 1-4).

    Args:
        adapter: the decoder (L layers).
        input_ids, padding: ``[b, s]`` left-padded prompts and their 1/0 mask.
        draft_layer: E in 1..L-1 (1-based: the draft runs layers 1..E).
        draft_length: d >= 1 tokens drafted per step.
        max_new_tokens: at most this many new tokens per row (the end token included).
        eos_ids: a row ends after emitting any of these.
        draft_head: the draft's head (default: the final norm and the full LM head at layer E).
        keep_cache: return the key/value cache in ``extra["cache"]`` (slot ``s + i - 1`` holds
            the input of new token i, as in ``models.generation.generate``).

    Raises:
        GenerationError: E outside 1..L-1, d < 1, an empty batch (the message names the key).
    """
    L = adapter.num_layers
    E, d = draft_layer, draft_length
    check_speculative(E, d, L)
    b, s = input_ids.shape
    if b == 0:
        raise GenerationError("generate: the prompt batch is empty")
    if max_new_tokens < 1:
        raise GenerationError(f"generate.max_new_tokens: must be >= 1; got {max_new_tokens}")
    device = input_ids.device
    head = draft_head if draft_head is not None else DraftHead(adapter)
    cache = adapter.new_cache(b, s + max_new_tokens + d, adapter.embed(input_ids[:1, :1]))
    cache.valid[:, :s] = padding.bool()
    hidden, _ = _prefill(adapter, input_ids, padding, cache)
    first = adapter.lm_logits(adapter.final_norm(hidden[:, -1])).argmax(-1)  # [b]
    tokens = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    tokens[:, 0] = first
    eos = torch.tensor(sorted(set(eos_ids)), device=device, dtype=torch.long)
    alive = ~torch.isin(first, eos) & (max_new_tokens > 1)
    lengths = torch.ones(b, dtype=torch.long, device=device)
    accepted = torch.full((b, max(0, max_new_tokens - 1)), -1, dtype=torch.long, device=device)
    steps = torch.zeros(b, dtype=torch.long, device=device)
    left_pad = s - padding.long().sum(-1)  # [b]: position id = slot - left_pad
    free = torch.full((b,), s, dtype=torch.long, device=device)  # next free slot: the pending token's
    offsets = torch.arange(d + 1, device=device)

    while True:
        rows = alive.nonzero().squeeze(-1)
        if rows.numel() == 0:
            break
        cache_rows = None if rows.numel() == b else rows  # all rows: layers read the cache without a gather
        slots = free[rows][:, None] + offsets  # [a, d+1]: x_0..x_d
        cache.valid[rows[:, None], slots] = True  # later slots stay invalid; the mask is causal over slots
        pending = tokens[rows, lengths[rows] - 1]  # x_0 [a]
        embedded = adapter.embed(pending)[:, None]  # [a, 1, dm]
        cos, sin = adapter.rotary(embedded, slots - left_pad[rows][:, None])  # [a, d+1, hd]

        # 1. draft x_1..x_d from layer E, one position per pass
        drafts, states, hidden = [], [], embedded
        for i in range(d):
            for index in range(E):
                hidden = adapter.extend_layer(index, hidden, cos[:, i:i + 1], sin[:, i:i + 1], cache, cache_rows,
                                              slots[:, i:i + 1])
            states.append(hidden)
            drafts.append(head(hidden[:, 0]))
            hidden = adapter.embed(drafts[-1])[:, None]
        # 2. verify: x_d through layers 1..E, then layers E+1..L over x_0..x_d at once
        for index in range(E):
            hidden = adapter.extend_layer(index, hidden, cos[:, d:], sin[:, d:], cache, cache_rows, slots[:, d:])
        hidden = torch.cat(states + [hidden], 1)  # [a, d+1, dm] layer-E states
        for index in range(E, L):
            hidden = adapter.extend_layer(index, hidden, cos, sin, cache, cache_rows, slots)
        verified = adapter.lm_logits(adapter.final_norm(hidden)).argmax(-1)  # [a, d+1]: y_1..y_{d+1}
        # 3. accept the longest matching prefix (n drafts) plus the verifier's next token
        drafted = torch.stack(drafts, 1)  # [a, d]
        n = (drafted == verified[:, :d]).long().cumprod(-1).sum(-1)  # [a]
        # 4. rollback: slots of rejected tokens (offsets > n) are invalid again, in every layer
        cache.valid[rows[:, None], slots] = offsets[None] <= n[:, None]

        # emit y_1..y_{n+1}, cut at the first end token and at max_new_tokens
        count = lengths[rows]
        emit = (offsets[None] <= n[:, None]) & (offsets[None] < (max_new_tokens - count)[:, None])  # [a, d+1]
        ends = torch.isin(verified, eos) & emit
        emit &= (ends.long().cumsum(-1) - ends.long()) == 0  # nothing after the first end token
        columns = count[:, None] + offsets
        tokens[rows[:, None].expand_as(emit)[emit], columns[emit]] = verified[emit]
        taken = emit.sum(-1)
        accepted[rows, steps[rows]] = n
        steps[rows] += 1
        lengths[rows] = count + taken
        free[rows] += n + 1
        alive[rows] = ~(ends.any(-1) | (count + taken >= max_new_tokens))
    return SpeculativeResult(tokens, lengths, accepted, steps, E, d, L, {"cache": cache} if keep_cache else {})


def head_cost_in_layers(adapter: DecoderAdapter) -> float:
    """One full LM head in units of one decoder layer (matmul FLOPs, one position, no attention
    keys): about 8 on SmolLM2-135M (tied 49k-vocabulary head)."""
    return adapter.lm_head_flops() / adapter.layer_flops(0)


def sweep_draft_settings(adapter: DecoderAdapter, batches: list[tuple[torch.Tensor, torch.Tensor]], draft_layers: list[int],
                         draft_lengths: list[int], max_new_tokens: int, eos_ids: list[int], pad_id: int,
                         position_cost: float, draft_head_for=None) -> list[dict]:
    """Decode ``batches`` (dev prompts: ``(input_ids, padding)``) with every (E, d) and measure the
    decode cost per emitted token in layer units (``SpeculativeResult.cost``: machine-independent,
    given ``position_cost``, the extra cost of each further position in a pass, 0 = passes only).

    ``draft_head_for(E)`` builds the draft head for E (default: final norm + full LM head).
    Returns one dict per setting (``SpeculativeResult.stats`` summed over batches, plus
    ``relative_cost`` = cost / full-depth cost), cheapest first.
    """
    head_layers = head_cost_in_layers(adapter)
    rows = []
    for E in draft_layers:
        head = draft_head_for(E) if draft_head_for is not None else DraftHead(adapter)
        for d in draft_lengths:
            steps = tokens = accepted = 0
            cost = 0.0
            for ids, padding in batches:
                out = decode_self_speculative(adapter, ids, padding, E, d, max_new_tokens, eos_ids, pad_id, head)
                steps += int(out.steps.sum())
                tokens += int(out.decode_tokens.sum())
                accepted += int(out.accepted.clamp(min=0).sum())
                cost += out.cost(head_layers, head_layers * head.vocab_share, position_cost)
            full = adapter.num_layers + head_layers
            rows.append({"draft_layer": E, "draft_length": d, "acceptance_rate": accepted / max(1, steps * d),
                         "tokens_per_step": tokens / max(1, steps), "cost_per_token": cost / max(1, tokens),
                         "relative_cost": cost / max(1, tokens) / full})
    return sorted(rows, key=lambda r: r["relative_cost"])
