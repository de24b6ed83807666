"""Backbone adaptation for early exit in a decoder (LayerSkip recipe) and exit distillation; pure.

LayerSkip (Elhoushi et al., 2024, arXiv 2404.16710), section "training using layer dropout and
early exit loss", on self-distilled targets (``models.distillation``). Paper map:

| paper                                                       | code                          |
| ----------------------------------------------------------- | ----------------------------- |
| layer dropout p_l = p_max (exp(l ln2 / (L-1)) - 1), l = 0.. | ``layer_dropout_rates``       |
| per sample: a dropped layer is the identity                  | ``run_layers``                |
| early-exit loss through the shared LM head, scale by depth  | ``exit_weights``,             |
|                                                             | ``early_exit_loss``           |
| rotational curriculum (every R-th exit active per step)     | ``active_exits``              |
| targets: the text's next token                              | the original full model's     |
|                                                             | distribution (``top_k_kl``)   |

Differences from the paper, on purpose: the targets are the original model's next-token
distributions (self-distillation), not the data's tokens, so the full-depth model is pulled
towards the model the user named, and an exit point reads ``DecoderExits.logits`` (its
translator, then the shared LM head) rather than the bare final norm. The exit weight of an
early point at layer l is ``exit_scale * l / L`` (growing with depth, as the paper's
``e_scale * sum_{i<=l} i``, but linear), the last layer's 1; the active weights sum to 1.

With ``train_backbone=False`` the same loop distils only the exits on the frozen backbone
(every exit point every step, no layer dropout): issue 22 item 1.

Shape notation: b = sequences, s = positions, n = real positions, d = hidden, P = exit points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from models.adapters.decoder import DecoderAdapter
from models.distillation import TeacherTargets, agreement, next_token_nll, top_k_kl
from models.errors import ExitflowError
from models.generation import DecoderExits

ADAPT_MODES = ("none", "lora", "full")
CURRICULA = ("all", "rotational")


class AdaptationError(ExitflowError, ValueError):
    """Bad adaptation input: a LoRA target the model lacks, an empty budget."""


# ---------------------------------------------------------------------------- schedules
def layer_dropout_rates(num_layers: int, p_max: float) -> torch.Tensor:
    """LayerSkip's rates ``[L]``: p_l = p_max (exp(l ln2 / (L-1)) - 1) for 0-based l, so layer
    1 is never dropped and layer L is dropped with p_max."""
    if num_layers == 1:
        return torch.tensor([0.0])
    l = torch.arange(num_layers, dtype=torch.float64)
    return (p_max * (torch.exp(l * math.log(2) / (num_layers - 1)) - 1)).float()


def active_exits(num_points: int, step: int, curriculum: str, rotation: int) -> list[bool]:
    """Which exit points enter the loss at ``step``: the last always; the earlier ones all
    (``"all"``) or those with index = step mod ``rotation`` (``"rotational"``)."""
    if curriculum not in CURRICULA:
        raise AdaptationError(f"generate.adaptation.curriculum must be one of {', '.join(CURRICULA)}; got {curriculum!r}")
    if curriculum == "all":
        return [True] * num_points
    return [i % rotation == step % rotation for i in range(num_points - 1)] + [True]


def exit_weights(points: list[int], num_layers: int, exit_scale: float, active: list[bool],
                 last_weight: float = 1.0) -> torch.Tensor:
    """``[P]`` loss weights: ``exit_scale * l / L`` for an active early point at layer l,
    ``last_weight`` for the last, 0 for inactive ones; normalised to sum 1 (all zeros if none)."""
    w = torch.tensor([exit_scale * p / num_layers for p in points[:-1]] + [last_weight], dtype=torch.float32)
    w = w * torch.tensor(active, dtype=torch.float32)
    total = w.sum()
    return w / total if total > 0 else w


# ---------------------------------------------------------------------------- forward
def run_layers(adapter: DecoderAdapter, input_ids: torch.Tensor, padding: torch.Tensor, record: list[int],
               drop_rates: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[int, torch.Tensor]:
    """Every layer over (right- or left-) padded sequences, no cache; the states after the
    1-based layers in ``record``: ``{layer: [b, s, d]}``.

    Layer dropout (``drop_rates [L]``) applies only while ``adapter.lm.training``: each sequence
    skips layer l with probability ``drop_rates[l]`` (drawn from ``generator``), i.e. that
    layer is the identity for it; the layer runs on the kept sequences only.
    """
    positions = (padding.long().cumsum(-1) - 1).clamp(min=0)
    hidden = adapter.embed(input_ids)
    cos, sin = adapter.rotary(hidden, positions)
    dropping = drop_rates is not None and adapter.lm.training
    states = {}
    for index in range(adapter.num_layers):
        keep = None
        if dropping and drop_rates[index] > 0:
            keep = torch.rand(hidden.shape[0], generator=generator) >= drop_rates[index]
        if keep is None or keep.all():
            hidden = adapter.prefill_layer(index, hidden, cos, sin, padding, None)
        elif keep.any():
            rows = keep.nonzero()[:, 0].to(hidden.device)
            out = adapter.prefill_layer(index, hidden[rows], cos[rows], sin[rows], padding[rows], None)
            hidden = hidden.index_put((rows,), out)
        if index + 1 in record:
            states[index + 1] = hidden
    return states


def early_exit_loss(exits: DecoderExits, states: dict[int, torch.Tensor], teacher: TeacherTargets,
                    weights: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """``sum_i w_i KL_k(teacher || exit_i)`` over exit points with ``w_i > 0``.

    Args:
        states: ``{layer: [n, d]}`` at every exit point's layer (the real positions).
        teacher: ``n`` targets; weights: ``[P]`` (``exit_weights``).

    Returns:
        ``(loss, [P] per-point KL, NaN where the point was not computed)``.
    """
    loss, per_point = None, []
    for i, layer in enumerate(exits.points):
        if weights[i] <= 0:
            per_point.append(float("nan"))
            continue
        kl = top_k_kl(exits.logits(i, states[layer]), teacher)
        per_point.append(kl.item())
        loss = weights[i] * kl if loss is None else loss + weights[i] * kl
    if loss is None:
        raise AdaptationError("no exit point is active in this step: check generate.adaptation.curriculum")
    return loss, per_point


# ---------------------------------------------------------------------------- data
@dataclass
class DistillSet:
    """Teacher-forced text with its teacher: ``ids [N]`` (sequences concatenated), ``lengths [S]``
    (sum = N), ``teacher`` at all N positions (position t's distribution over token t + 1; None
    while it is being computed)."""

    ids: torch.Tensor
    lengths: torch.Tensor
    teacher: TeacherTargets | None = None

    @property
    def tokens(self) -> int:
        return int(self.ids.numel())

    def batches(self, batch_sequences: int, generator: torch.Generator | None = None) -> Iterator[tuple]:
        """``(ids [b, s], padding [b, s], teacher [n], next_ids [n])`` per batch of sequences, right
        padded; ``n`` = real positions in row-major order; ``next_ids`` is -100 at each sequence's
        last position (no next token). Shuffled by ``generator`` when given, else in order."""
        starts = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.long().cumsum(0)[:-1]])
        count = self.lengths.numel()
        order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
        for first in range(0, count, batch_sequences):
            chosen = order[first:first + batch_sequences]
            width = int(self.lengths[chosen].max())
            ids = torch.zeros(len(chosen), width, dtype=torch.long)
            padding = torch.zeros_like(ids)
            index, next_ids = [], []
            for row, seq in enumerate(chosen.tolist()):
                a, n = int(starts[seq]), int(self.lengths[seq])
                ids[row, :n] = self.ids[a:a + n].long()
                padding[row, :n] = 1
                index.append(torch.arange(a, a + n))
                next_ids.append(torch.cat([self.ids[a + 1:a + n].long(), torch.tensor([-100])]))
            index = torch.cat(index)
            yield ids, padding, None if self.teacher is None else self.teacher[index], torch.cat(next_ids)


# ---------------------------------------------------------------------------- training
@dataclass(frozen=True)
class AdaptTraining:
    """One loop for both uses: ``train_backbone`` (LoRA or full: the backbone's trainable
    parameters at ``lr``, layer dropout up to ``p_max``, the last layer in the loss) or not
    (exits only). Exit translators train at ``exit_lr``. ``max_tokens``: train until this many
    tokens were seen, cycling over the data (``epochs`` is then ignored); None: ``epochs`` epochs."""

    epochs: int
    lr: float
    exit_lr: float
    weight_decay: float
    batch_sequences: int
    p_max: float
    exit_scale: float
    curriculum: str
    rotation: int
    train_backbone: bool
    max_tokens: int | None = None


def _as_is(batches: Iterable, _epoch: int) -> Iterable:
    return batches


def train_exits_and_backbone(exits: DecoderExits, data: DistillSet, cfg: AdaptTraining, generator: torch.Generator,
                             progress: Callable[[Iterable, int], Iterable] = _as_is,
                             on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """Distil the exits (and, with ``train_backbone``, the backbone) towards the teacher.

    Per step: the backbone over a batch of sequences (layer dropout when adapting; no gradient
    when frozen), then ``early_exit_loss`` at the active exit points (``active_exits``,
    ``exit_weights``; frozen: every early point, the last layer out of the loss).

    Returns:
        ``[{"step", "tokens", "loss", "point_kl": [P]}]``.
    """
    adapter = exits.adapter
    L = adapter.num_layers
    backbone = [p for p in adapter.lm.parameters() if p.requires_grad] if cfg.train_backbone else []
    groups = [{"params": list(exits.translators.parameters()), "lr": cfg.exit_lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr})
    groups = [g for g in groups if g["params"]]
    if not groups:
        return []
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    rates = layer_dropout_rates(L, cfg.p_max) if cfg.train_backbone else None
    adapter.lm.train(cfg.train_backbone)
    history, step, seen, epoch = [], 0, 0, 0
    try:
        while (epoch < cfg.epochs) if cfg.max_tokens is None else (seen < cfg.max_tokens):
            epoch += 1
            for ids, padding, teacher, _ in progress(data.batches(cfg.batch_sequences, generator), epoch):
                if cfg.max_tokens is not None and seen >= cfg.max_tokens:
                    break
                mask = padding.bool()
                if cfg.train_backbone:
                    active = active_exits(len(exits.points), step, cfg.curriculum, cfg.rotation)
                    weights = exit_weights(exits.points, L, cfg.exit_scale, active)
                    states = run_layers(adapter, ids, padding, exits.points, rates, generator)
                else:
                    weights = exit_weights(exits.points, L, 1.0, [True] * len(exits.points), last_weight=0.0)
                    with torch.no_grad():
                        states = run_layers(adapter, ids, padding, exits.points)
                loss, point_kl = early_exit_loss(exits, {k: v[mask] for k, v in states.items()}, teacher, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step, seen = step + 1, seen + int(mask.sum())
                record = {"step": step, "tokens": seen, "loss": loss.item(), "point_kl": point_kl}
                history.append(record)
                if on_step is not None:
                    on_step(record)
    finally:
        adapter.lm.eval()
    return history


@torch.no_grad()
def evaluate_exits(exits: DecoderExits, data: DistillSet, batch_sequences: int) -> dict:
    """Held-out quality of every exit point against the teacher (the original full model):
    ``{"points", "tokens", "agreement" [P] (greedy token = the teacher's), "agreement_last" [P]
    (= this model's own last layer's: what a self-speculative draft must match), "kl" [P],
    "perplexity" (the last layer on the text's own next tokens)}``."""
    P = len(exits.points)
    agree, agree_last, kl = torch.zeros(P), torch.zeros(P), torch.zeros(P)
    nll, n, m = 0.0, 0, 0
    for ids, padding, teacher, next_ids in data.batches(batch_sequences):
        states = run_layers(exits.adapter, ids, padding, exits.points)
        mask = padding.bool()
        logits = [exits.logits(i, states[layer][mask]) for i, layer in enumerate(exits.points)]
        last = logits[-1].argmax(-1)
        for i, lg in enumerate(logits):
            agree[i] += agreement(lg, teacher.greedy).sum()
            agree_last[i] += agreement(lg, last).sum()
            kl[i] += top_k_kl(lg, teacher, reduction="none").sum()
        has_next = next_ids >= 0
        nll += next_token_nll(logits[-1][has_next], next_ids[has_next]).sum().item()
        n, m = n + int(mask.sum()), m + int(has_next.sum())
    return {"points": list(exits.points), "tokens": n, "agreement": (agree / n).tolist(),
            "agreement_last": (agree_last / n).tolist(), "kl": (kl / n).tolist(),
            "perplexity": math.exp(nll / max(1, m))}


# ---------------------------------------------------------------------------- LoRA / full
def linear_module_names(lm: nn.Module) -> list[str]:
    """The last name part of every ``nn.Linear`` in ``lm`` (what LoRA ``target_modules`` match)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in lm.named_modules() if isinstance(module, nn.Linear)})


def check_adaptation(mode: str, tokens: int, lm: nn.Module, lora_targets: list[str]) -> None:
    """Raises AdaptationError naming the key: an unknown mode, a budget below one token, or
    (``lora``) target modules the model lacks."""
    if mode not in ADAPT_MODES:
        raise AdaptationError(f"generate.adapt must be one of {', '.join(ADAPT_MODES)}; got {mode!r}")
    if mode == "none":
        return
    if tokens < 1:
        raise AdaptationError(f"generate.adaptation.tokens: the adaptation budget is {tokens} tokens; give at least 1 "
                              f"(e.g. 100000), or set generate.adapt: none")
    if mode == "lora":
        have = linear_module_names(lm)
        missing = sorted(set(lora_targets) - set(have))
        if missing or not lora_targets:
            raise AdaptationError(f"generate.adaptation.lora_targets: {missing or lora_targets} not among the linear modules "
                                  f"of {type(lm).__name__} ({', '.join(have)}); name some of those")


def add_lora(lm: nn.Module, rank: int, alpha: float, targets: list[str]) -> nn.Module:
    """Wrap ``lm`` in ``peft`` LoRA adapters on ``targets`` (B = 0: the model starts unchanged);
    only the LoRA weights train. Returns the ``PeftModel`` (``lm``'s modules are replaced in
    place, so a ``DecoderAdapter`` over ``lm`` runs the adapted layers)."""
    from peft import LoraConfig, get_peft_model

    check_adaptation("lora", 1, lm, targets)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none")
    return get_peft_model(lm, config)
