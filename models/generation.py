"""Early exit in generation: per-token exits in a decoder LLM with state copying.

ConsistentEE (Zeng et al., AAAI 2024) section "LLM" and CALM (Schuster et al., NeurIPS 2022)
as its baseline. Paper map:

| paper / METHODS.md                                       | code                                   |
| -------------------------------------------------------- | -------------------------------------- |
| exit points (every 5th layer, or ``all``)                | ``exit_points``                        |
| exit = final norm + shared LM head on the last position  | ``DecoderExits`` (``exit_head``)        |
| init: weighted loss over exits, sum_i i L_i / sum_i i    | ``weighted_exit_loss``                 |
| state copying: skipped layers' K/V from the exit state   | ``DecoderAdapter.copy_state`` (adapter) |
| ConsistentEE policy pi(exit | s_i) > tau                 | ``PolicyExit`` + ``models.consistentee`` |
| vanilla reward -CE - alpha * layer, REINFORCE, K copies  | ``policy_step_loss`` (reuses Eqs. 3-5)  |
| memorized-layer reward (option)                          | ``policy_step_loss(memorized=...)``     |
| Eq. 6: CE at the sampled exit only (iterative step 4)    | ``exit_norm_step_loss``                 |
| CALM softmax response: p_top1 - p_top2 >= tau            | ``SoftmaxResponse``                    |
| CALM hidden-state saturation: cos(h_i, h_prev) >= tau    | ``HiddenSaturation``                   |
| static exit                                              | ``StaticExit``                         |
| batched greedy decoding, per-row exits                   | ``generate``                           |

Decisions (also in the README):
- The prompt is encoded at full depth (prefill runs every layer for every prompt position, so
  its cache is exact); the first new token therefore comes from the full model. Exits apply
  from the second new token on; average exit layer and FLOPs per token count decode steps only.
- Exit points read the last position's state through a norm and the shared LM head; the
  last point is the model's own final norm and LM head. The backbone and LM head stay frozen
  ("exits only", no LoRA): the full-depth model stays exactly the model the user named, which
  is the quality reference. What an earlier exit point trains (``exit_head``):
  ``"shared"``: nothing, the final norm as in the paper's LLM setting (no training);
  ``"norm"``: its own RMSNorm, initialised as a copy of the final norm;
  ``"affine"`` (default): ``norm(h + W h + b)`` with ``W, b`` zero-initialised (so it starts as
  the paper's setting) and its own norm, a learned translator in the manner of the "tuned lens"
  (Belrose et al., 2023). Measured on SmolLM2-135M, norm-only exits barely move (README), and
  a frozen 30-layer backbone gives early layers nothing the shared head can read without one.
- Policy and saturation read exit states: the policy reads the exit state (after the exit's
  norm / translator); saturation compares raw hidden states of consecutive *exit points*
  (layer 0 = the embedding before the first), because only exit points are decision points.
- The policy sweep varies tau (pi > tau) for one trained policy, as the encoder path does.
- Rewards use the real layer number of the exit point (t in -alpha * t), not its index.
- The policy learns from held-out train prompts (``tasks.generation.train_exits``): on the
  exits' own training tokens their losses are optimistic and the policy would exit too early.
- ConsistentEE rounds are a fixed number (default 1 round of 4 policy epochs, K = 8 copies), without the encoder path's
  dev check between rounds: one round costs a pass of the LM head over every training token.
- Decoding is greedy throughout (the paper samples with top-p 0.75, top-k 40): greedy makes
  the full-depth response a deterministic reference for ROUGE-L.
- CALM is its plain threshold rule swept over tau, without CALM's calibration procedure and
  without its position-decaying threshold.
- Eq. 6 is written here once more (``exit_norm_step_loss``) instead of reusing
  ``models.consistentee.exit_task_loss``: that one takes logits of every exit ``[P, n, V]``,
  which over a 49k vocabulary does not fit in memory; this one runs the LM head only at each
  token's sampled exit.
- Exit-head training uses AdamW with one weight-decay group and no schedule (a few thousand
  steps on a frozen backbone), unlike the encoder path's optimiser (METHODS section 0).

Shape notation: b = rows, a = running rows, P = exit points, d = hidden, V = vocabulary.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.adapters.decoder import DecoderAdapter
from models.consistentee import PolicyNetworks, exit_rewards, memorized_layer, policy_loss, sample_trajectories
from models.errors import ExitflowError


class GenerationError(ExitflowError, ValueError):
    """Bad generation input: exit layers, criteria, prompts."""


def exit_points(spec: str | int | list[int], num_layers: int) -> list[int]:
    """Exit layers (1-based, sorted, always ending at L) from ``"all"``, an interval ``k``
    (every k-th layer: k, 2k, ..., plus L) or an explicit list.

    Raises:
        GenerationError: a layer outside 1..L, or an interval below 1.
    """
    if spec == "all":
        return list(range(1, num_layers + 1))
    if isinstance(spec, int):
        if spec < 1:
            raise GenerationError(f"generate.exit_layers: an interval must be >= 1; got {spec}")
        layers = list(range(spec, num_layers + 1, spec))
    else:
        layers = [int(x) for x in spec]
        bad = [x for x in layers if not 1 <= x <= num_layers]
        if bad:
            raise GenerationError(f"generate.exit_layers: layers {bad} are outside 1..{num_layers} (the model has {num_layers} layers)")
    return sorted(set(layers) | {num_layers})


EXIT_HEADS = ("affine", "norm", "shared")


class ExitTranslator(nn.Module):
    """``norm(h + W h + b)``: an own copy of the final norm, after an identity-initialised affine
    map when ``affine`` (W, b start at zero). ``[..., d] -> [..., d]``."""

    def __init__(self, final_norm: nn.Module, hidden_size: int, affine: bool):
        super().__init__()
        self.norm = copy.deepcopy(final_norm).requires_grad_(True)
        self.proj = nn.Linear(hidden_size, hidden_size) if affine else None
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden if self.proj is None else hidden + self.proj(hidden))

    def flops(self) -> int:
        return 0 if self.proj is None else 2 * self.proj.in_features * self.proj.out_features


class DecoderExits(nn.Module):
    """Exit points of a causal LM: exit state (``exit_head``) + shared LM head; plus the policy.

    Args:
        adapter: the frozen decoder.
        points: exit layers (``exit_points``), last = L.
        exit_head: ``"affine"``, ``"norm"`` or ``"shared"`` (module docstring).
        policy: build ConsistentEE policy networks (one per point before the last).
    """

    def __init__(self, adapter: DecoderAdapter, points: list[int], exit_head: str = "affine", policy: bool = True):
        super().__init__()
        if exit_head not in EXIT_HEADS:
            raise GenerationError(f"generate.exit_head must be one of {', '.join(EXIT_HEADS)}; got {exit_head!r}")
        self.adapter = adapter
        self.points = list(points)
        self.exit_head = exit_head
        self.translators = nn.ModuleList() if exit_head == "shared" else nn.ModuleList(
            ExitTranslator(adapter.final_norm, adapter.hidden_size, exit_head == "affine") for _ in self.points[:-1])
        self.policy = PolicyNetworks(adapter.hidden_size, len(self.points)) if policy else None

    def normed(self, point: int, hidden: torch.Tensor) -> torch.Tensor:
        """The exit state of 0-based point ``point``: what the LM head and the policy read."""
        if point < len(self.translators):
            return self.translators[point](hidden)
        return self.adapter.final_norm(hidden)

    def state_flops(self, point: int) -> int:
        """Matmul FLOPs of one exit state at 0-based ``point``."""
        return self.translators[point].flops() if point < len(self.translators) else 0

    def logits(self, point: int, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden [..., d]`` at exit point ``point`` -> next-token logits ``[..., V]``."""
        return self.adapter.lm_logits(self.normed(point, hidden))

    def exit_probability(self, point: int, normed: torch.Tensor) -> torch.Tensor:
        if self.policy is None:
            raise GenerationError("the policy criterion needs exits trained with a policy (DecoderExits(policy=True))")
        return self.policy(point + 1, normed)


# ---------------------------------------------------------------------------- criteria
TOKEN_CRITERIA: dict[str, type["TokenCriterion"]] = {}


def register_token_criterion(cls):
    TOKEN_CRITERIA[cls.name] = cls
    return cls


@dataclass
class ExitContext:
    """What a criterion may read at exit point ``point`` for the ``a`` running rows."""

    point: int
    layer: int
    hidden: torch.Tensor    # [a, d] raw state after the layer
    normed: torch.Tensor | None  # [a, d] exit state when the criterion reads it
    previous: torch.Tensor  # [a, d] raw state at the previous exit point (embedding before the first)
    logits: torch.Tensor | None  # [a, V] when the criterion reads logits
    exits: DecoderExits


class TokenCriterion:
    """Per-row exit decision at an exit point. ``reads_logits``: it runs the LM head at every
    exit point it passes; ``reads_exit_state``: it computes the exit state (translator) at every
    exit point it passes (their costs count). Others compute both only where they exit."""

    name: ClassVar[str]
    reads_logits: ClassVar[bool] = False
    reads_exit_state: ClassVar[bool] = False

    def __init__(self, threshold: float):
        self.threshold = threshold

    def fires(self, ctx: ExitContext) -> torch.Tensor:
        raise NotImplementedError

    def decision_flops(self, exits: DecoderExits, point: int) -> int:
        """Matmul FLOPs of one decision (LM head excluded: counted by the loop)."""
        return 0

    def __repr__(self):
        return f"{self.name}({self.threshold:g})"


@register_token_criterion
class StaticExit(TokenCriterion):
    """Every token exits at the first exit point at or above layer ``threshold``."""

    name = "static"

    def fires(self, ctx):
        return torch.full((ctx.hidden.shape[0],), ctx.layer >= self.threshold, device=ctx.hidden.device)


@register_token_criterion
class SoftmaxResponse(TokenCriterion):
    """CALM: exit when the top-1 minus top-2 softmax probability is >= tau."""

    name = "softmax"
    reads_logits = True
    reads_exit_state = True

    def fires(self, ctx):
        top = torch.softmax(ctx.logits.float(), -1).topk(2, dim=-1).values
        return (top[:, 0] - top[:, 1]) >= self.threshold


@register_token_criterion
class HiddenSaturation(TokenCriterion):
    """CALM: exit when cos(h_i, h_prev) >= tau for consecutive exit-point states."""

    name = "saturation"

    def fires(self, ctx):
        return F.cosine_similarity(ctx.hidden, ctx.previous, dim=-1) >= self.threshold


@register_token_criterion
class PolicyExit(TokenCriterion):
    """ConsistentEE: exit when pi(exit | s_i) > tau (s_i = the exit-normed state)."""

    name = "policy"
    reads_exit_state = True

    def fires(self, ctx):
        return ctx.exits.exit_probability(ctx.point, ctx.normed) > self.threshold

    def decision_flops(self, exits, point):
        return exits.policy.flops_at(point + 1, len(exits.points))


def token_criterion(name: str, threshold: float) -> TokenCriterion:
    if name not in TOKEN_CRITERIA:
        raise GenerationError(f"unknown generation criterion {name!r}; known: {', '.join(sorted(TOKEN_CRITERIA))}")
    return TOKEN_CRITERIA[name](threshold)


# ---------------------------------------------------------------------------- generation
@dataclass
class GenerationResult:
    """``tokens [b, T]`` (``pad_id`` after a row's end), ``exit_layers [b, T]`` (L for the
    first token, 0 after the end), ``lengths [b]``, ``decode_flops [b]`` (matmul FLOPs of the
    decode steps, LM head, copying and decisions included), ``decode_tokens [b]``."""

    tokens: torch.Tensor
    exit_layers: torch.Tensor
    lengths: torch.Tensor
    decode_flops: torch.Tensor
    decode_tokens: torch.Tensor
    num_layers: int
    extra: dict = field(default_factory=dict)

    def sequences(self) -> list[list[int]]:
        return [self.tokens[i, : int(n)].tolist() for i, n in enumerate(self.lengths)]

    def decode_exit_layers(self) -> torch.Tensor:
        """Exit layers of every decode-step token (the first token of each row excluded)."""
        return self.exit_layers[:, 1:][self.exit_layers[:, 1:] > 0]


def _prefill(adapter: DecoderAdapter, input_ids, padding, cache, record: list[int] | None = None):
    """Every layer over left-padded prompts; returns the last layer's states ``[b, s, d]`` and,
    when ``record`` names 1-based layers, the states after each of them ``{layer: [b, s, d]}``."""
    positions = (padding.long().cumsum(-1) - 1).clamp(min=0)
    hidden = adapter.embed(input_ids)
    cos, sin = adapter.rotary(hidden, positions)
    states = {0: hidden} if record is not None else None
    for index in range(adapter.num_layers):
        hidden = adapter.prefill_layer(index, hidden, cos, sin, padding, cache)
        if record is not None and index + 1 in record:
            states[index + 1] = hidden
    return hidden, states


@torch.no_grad()
def generate(exits: DecoderExits, criterion: TokenCriterion, input_ids: torch.Tensor, padding: torch.Tensor,
             max_new_tokens: int, eos_ids: list[int], pad_id: int, keep_cache: bool = False) -> GenerationResult:
    """Greedy decoding with per-row, per-token early exits and state copying.

    Args:
        input_ids, padding: ``[b, s]`` left-padded prompts and their 1/0 mask.
        max_new_tokens: at most this many new tokens per row (the end token included).
        eos_ids: a row ends after emitting any of these.
        keep_cache: return the key/value cache in ``extra["cache"]`` (slot ``s + i - 1`` holds
            the input of new token i).
    Each decode step runs the layers for the rows still running (compacted after every exit
    point), decides per row at exit points, and fills the skipped layers' cache entries of
    exited rows from their exit state (``DecoderAdapter.copy_state``), so every layer's cache
    grows by one slot per step for every row.
    """
    adapter = exits.adapter
    L, points = adapter.num_layers, exits.points
    b, s = input_ids.shape
    device = input_ids.device
    if b == 0:
        raise GenerationError("generate: the prompt batch is empty")
    cache = adapter.new_cache(b, s + max_new_tokens, adapter.embed(input_ids[:1, :1]))
    cache.valid[:, :s] = padding.bool()
    hidden, _ = _prefill(adapter, input_ids, padding, cache)
    first = adapter.lm_logits(adapter.final_norm(hidden[:, -1])).argmax(-1)  # [b]
    tokens = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    exit_layers = torch.zeros(b, max_new_tokens, dtype=torch.long, device=device)
    tokens[:, 0], exit_layers[:, 0] = first, L
    eos = torch.tensor(sorted(set(eos_ids)), device=device)
    alive = ~torch.isin(first, eos)
    lengths = torch.ones(b, dtype=torch.long, device=device)
    flops = torch.zeros(b, dtype=torch.long)
    decode_tokens = torch.zeros(b, dtype=torch.long)
    next_position = padding.long().sum(-1)  # [b] position id of the next token
    steps = []  # per decode step: (cache rows, exit layers, attended slots)

    for step in range(1, max_new_tokens):
        rows = alive.nonzero().squeeze(-1)  # cache rows still generating
        if rows.numel() == 0:
            break
        every_row = rows.numel() == b  # then layers read the cache without a row gather
        slot = s + step - 1
        cache.valid[rows, slot] = True
        keys = cache.valid[rows, : slot + 1].sum(-1).cpu()  # [a] attended slots per row
        hidden = adapter.embed(tokens[rows, step - 1])[:, None]  # [a, 1, d]
        cos, sin = adapter.rotary(hidden, next_position[rows][:, None])
        previous = hidden[:, 0]
        running = torch.arange(rows.numel(), device=device)  # indices into rows
        new_tokens = torch.empty(rows.numel(), dtype=torch.long, device=device)
        new_layers = torch.empty(rows.numel(), dtype=torch.long, device=device)
        point = 0
        for index in range(L):
            layer = index + 1
            full = running.numel() == rows.numel()
            hidden = adapter.decode_layer(index, hidden, cos if full else cos[running], sin if full else sin[running],
                                          cache, (None if every_row else rows) if full else rows[running], slot)
            if layer != points[point]:
                continue
            state = hidden[:, 0]
            normed = exits.normed(point, state) if criterion.reads_exit_state or layer == L else None
            logits = adapter.lm_logits(normed) if criterion.reads_logits else None
            if layer == L:
                fire = torch.ones(running.numel(), dtype=torch.bool, device=device)
            else:
                ctx = ExitContext(point, layer, state, normed, previous, logits, exits)
                fire = criterion.fires(ctx)
            if fire.any():
                if logits is not None:
                    out = logits[fire]
                else:
                    out = adapter.lm_logits(normed[fire] if normed is not None else exits.normed(point, state[fire]))
                done = running[fire]
                new_tokens[done] = out.argmax(-1)
                new_layers[done] = layer
                if layer < L:
                    adapter.copy_state(state[fire], index + 1, cos[done], sin[done], cache, rows[done], slot)
                keep = ~fire
                running, hidden, previous = running[keep], hidden[keep], state[keep]
            else:
                previous = state
            point += 1
            if running.numel() == 0:
                break
        tokens[rows, step] = new_tokens
        exit_layers[rows, step] = new_layers
        lengths[rows] += 1
        next_position[rows] += 1
        steps.append((rows, new_layers, keys))
        alive[rows] = ~torch.isin(new_tokens, eos)
    for rows, layers, keys in steps:  # FLOPs after the loop, so timing does not include the bookkeeping
        flops[rows.cpu()] += decode_token_flops(exits, criterion, layers.cpu(), keys)
        decode_tokens[rows.cpu()] += 1
    return GenerationResult(tokens, exit_layers, lengths, flops, decode_tokens, L,
                            {"cache": cache} if keep_cache else {})


def decode_token_flops(exits: DecoderExits, criterion: TokenCriterion, exit_layer: torch.Tensor,
                       keys: torch.Tensor) -> torch.Tensor:
    """Matmul FLOPs of one decode step per row, from its exit layer: the layers run, the LM
    head (at every exit point passed when the criterion reads logits, else once), the
    decisions (policy networks), the exit states (translators; at every point passed when the
    criterion reads them, else at the exit) and the copied keys/values of the skipped layers.
    ``exit_layer, keys [a]`` (keys = attended cache slots) -> ``[a]`` long."""
    adapter, L = exits.adapter, exits.adapter.num_layers
    points = torch.tensor(exits.points)
    passed = (points[None, :] <= exit_layer[:, None])  # [a, P]
    heads = passed.sum(-1) if criterion.reads_logits else torch.ones_like(exit_layer)
    decision = torch.tensor([criterion.decision_flops(exits, p) if layer < L else 0 for p, layer in enumerate(exits.points)])
    state = torch.tensor([exits.state_flops(p) for p in range(len(exits.points))])  # [P]
    if criterion.reads_exit_state:
        state_cost = (passed.long() * state).sum(-1)
    else:  # only at the exit point
        state_cost = state[(passed.long().sum(-1) - 1).clamp(min=0)]
    return (exit_layer * adapter.layer_flops(keys) + (L - exit_layer) * adapter.copy_flops()
            + heads * adapter.lm_head_flops() + (passed.long() * decision).sum(-1) + state_cost)


def full_depth_decode_flops(adapter: DecoderAdapter, prompt_lengths: torch.Tensor, decode_tokens: torch.Tensor) -> torch.Tensor:
    """FLOPs of the same decode steps run at full depth (every layer + one LM head per token).
    ``prompt_lengths, decode_tokens [b]`` -> ``[b]``; decode token i (0-based) attends to prompt + i + 1 slots."""
    out = []
    for p, n in zip(prompt_lengths.tolist(), decode_tokens.tolist()):
        keys = torch.arange(p + 1, p + 1 + n)
        out.append(int((adapter.num_layers * adapter.layer_flops(keys) + adapter.lm_head_flops()).sum()))
    return torch.tensor(out, dtype=torch.long)


# ---------------------------------------------------------------------------- training
@torch.no_grad()
def collect_exit_states(exits: DecoderExits, input_ids: torch.Tensor, padding: torch.Tensor,
                        predicts: torch.Tensor) -> torch.Tensor:
    """Raw states at every exit point for the positions that predict a target token.

    ``input_ids, padding, predicts [b, s]`` (``predicts`` marks positions whose next token is
    a training target) -> ``[P, n, d]`` with n = ``predicts.sum()``, in row-major order.
    """
    _, states = _prefill(exits.adapter, input_ids, padding, None, record=exits.points)
    return torch.stack([states[layer][predicts.bool()] for layer in exits.points])


def weighted_exit_loss(exits: DecoderExits, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Init objective: sum_i l_i * CE_i / sum_i l_i over exit points (l_i = the point's layer;
    the ``weighted`` objective of METHODS.md). ``states [P, n, d]``, ``targets [n]``."""
    weights = torch.tensor(exits.points, dtype=states.dtype, device=states.device)
    losses = torch.stack([F.cross_entropy(exits.logits(p, states[p]), targets) for p in range(len(exits.points))])
    return (weights * losses).sum() / weights.sum()


@torch.no_grad()
def point_losses(exits: DecoderExits, states: torch.Tensor, targets: torch.Tensor, chunk: int = 512):
    """Per-point CE and correctness of every token: ``([P, n] float, [P, n] bool)``."""
    losses, correct = [], []
    for start in range(0, targets.shape[0], chunk):
        part = slice(start, start + chunk)
        logits = torch.stack([exits.logits(p, states[p, part]) for p in range(len(exits.points))])  # [P, c, V]
        y = targets[part]
        losses.append(F.cross_entropy(logits.flatten(0, 1), y.repeat(len(exits.points)), reduction="none").view(len(exits.points), -1))
        correct.append(logits.argmax(-1) == y[None])
    return torch.cat(losses, 1), torch.cat(correct, 1)


def exit_probabilities(exits: DecoderExits, states: torch.Tensor) -> torch.Tensor:
    """pi at every point for every token: ``[P, n]`` (last row 1)."""
    with torch.no_grad():
        normed = [exits.normed(p, states[p]) for p in range(len(exits.points))]
    return torch.stack([exits.policy(p + 1, normed[p]) for p in range(len(exits.points))])


def policy_step_loss(exits: DecoderExits, states: torch.Tensor, losses: torch.Tensor, copies: int, alpha: float,
                     epsilon: float, memorized: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """REINFORCE on the policy for a batch of tokens (ConsistentEE Eqs. 3-5 from
    ``models.consistentee``): K sampled trajectories per token over the exit points, reward
    ``-CE - alpha * layer`` (or the memorized-layer reward given ``memorized [n]`` in layers).

    ``states [P, n, d]``, ``losses [P, n]`` (per-point CE, constants). Returns ``(loss, info)``.
    """
    layers = torch.tensor(exits.points, device=states.device)
    prob = exit_probabilities(exits, states).repeat_interleave(copies, dim=1)  # [P, n*K]
    point, log_prob = sample_trajectories(prob, epsilon, generator)  # 1-based point index
    exit_loss = losses.repeat_interleave(copies, dim=1).gather(0, (point - 1)[None]).squeeze(0)
    m = memorized.repeat_interleave(copies) if memorized is not None else None
    rewards = exit_rewards(exit_loss, layers[point - 1], alpha, exits.adapter.num_layers, m)
    return policy_loss(rewards, log_prob, copies), {"reward": rewards.mean().item(), "exit_layer": layers[point - 1].float().mean().item()}


def memorized_exit_layer(exits: DecoderExits, correct: torch.Tensor) -> torch.Tensor:
    """Eq. 7 over exit points, as a layer: ``correct [P, n]`` -> ``[n]`` layers."""
    layers = torch.tensor(exits.points, device=correct.device)
    return layers[memorized_layer(correct) - 1]


def exit_norm_step_loss(exits: DecoderExits, states: torch.Tensor, targets: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 6 (iterative step 4): CE at the exit point the frozen policy samples, training the
    exit norms only. ``states [P, n, d]``, ``targets [n]``."""
    with torch.no_grad():
        point, _ = sample_trajectories(exit_probabilities(exits, states), 0.0, generator)
    total = states.new_zeros(())
    for p in range(len(exits.points)):
        chosen = point == p + 1
        if chosen.any():
            total = total + F.cross_entropy(exits.logits(p, states[p, chosen]), targets[chosen], reduction="sum")
    return total / targets.shape[0]
