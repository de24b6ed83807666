"""Training a decoder's exits for generation: the init epochs and the ConsistentEE rounds; pure.

The loops of ``tasks/generation.py``'s ``train_exits`` without its files: they take the exits,
the exit states of the training tokens (``models.generation.collect_exit_states``), plain
settings and a seeded generator, and return per-epoch / per-round records.

Notation: P = exit points, n = training tokens, d = hidden. ``states [P, n, d]``, ``targets [n]``
(the next token each position predicts). The backbone and LM head never change: init trains
the exit translators only (``weighted_exit_loss``); a round trains the policy (REINFORCE with
decaying epsilon, ``policy_step_loss``), then one epoch of the translators at the sampled exits
(``exit_norm_step_loss``, Eq. 6). Every shuffle and sample draws from the one ``generator``, in
this order: init epochs, then per round the policy epochs' shuffles and samples, then the exit
epoch's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from models.consistentee import epsilon_at
from models.generation import (
    DecoderExits,
    exit_norm_step_loss,
    memorized_exit_layer,
    point_losses,
    policy_step_loss,
    weighted_exit_loss,
)


def token_batches(n: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded shuffle of ``n`` token indices in batches of ``size`` (the last may be short)."""
    order = torch.randperm(n, generator=generator)
    return [order[i:i + size] for i in range(0, n, size)]


def _as_is(batches: Iterable, _index: int) -> Iterable:
    return batches


def point_report(exits: DecoderExits, token_sets: dict[str, tuple[torch.Tensor, torch.Tensor]], tag: str) -> dict:
    """Each exit point's mean loss and accuracy on each named ``(states [P, n, d], targets [n])``:
    ``{f"{tag}_{name}": {"point_loss": [P], "point_accuracy": [P]}}``."""
    out = {}
    for name, (states, targets) in token_sets.items():
        loss, right = point_losses(exits, states, targets)
        out[f"{tag}_{name}"] = {"point_loss": loss.mean(1).tolist(), "point_accuracy": right.float().mean(1).tolist()}
    return out


@dataclass(frozen=True)
class InitTraining:
    """Init of the exit translators: AdamW, ``batch_tokens`` tokens per step."""

    epochs: int
    lr: float
    weight_decay: float
    batch_tokens: int


def train_init_exits(exits: DecoderExits, states: torch.Tensor, targets: torch.Tensor, cfg: InitTraining,
                     generator: torch.Generator, progress: Callable[[Iterable, int], Iterable] = _as_is,
                     on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Fit the translators on the weighted loss over exit points; nothing when there are none
    (a ``norm`` exit head) or no epochs.

    Args:
        states: ``[P, n, d]``; targets: ``[n]``.
        progress: ``(batches, epoch) -> batches`` (e.g. a progress bar).
        on_epoch: called with each epoch's record.

    Returns:
        ``[{"epoch", "weighted_loss"}]``, the mean loss per epoch.
    """
    trainable = list(exits.translators.parameters())
    history: list[dict] = []
    if not trainable or not cfg.epochs:
        return history
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    for epoch in range(1, cfg.epochs + 1):
        total, count = 0.0, 0
        for idx in progress(token_batches(targets.numel(), cfg.batch_tokens, generator), epoch):
            loss = weighted_exit_loss(exits, states[:, idx], targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
        record = {"epoch": epoch, "weighted_loss": total / count}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


@dataclass(frozen=True)
class PolicyTraining:
    """ConsistentEE rounds: ``policy_epochs`` policy epochs (``batch_tokens`` per step, epsilon
    decaying linearly from ``epsilon_start`` to ``epsilon_end`` over all rounds), then one epoch of
    the translators (``exit_lr``, ``weight_decay``, ``exit_batch_tokens`` per step). ``reward``:
    ``"hardness"`` adds the memorized-layer term; ``copies`` sampled trajectories per token;
    ``alpha`` weighs depth against loss."""

    rounds: int
    policy_epochs: int
    batch_tokens: int
    policy_lr: float
    exit_lr: float
    weight_decay: float
    exit_batch_tokens: int
    reward: str
    copies: int
    alpha: float
    epsilon_start: float
    epsilon_end: float


def _exit_epoch(exits: DecoderExits, states: torch.Tensor, targets: torch.Tensor, optimizer, batch_tokens: int,
                generator: torch.Generator) -> float:
    """One epoch of the translators at the policy's sampled exits (Eq. 6); the mean loss."""
    exit_loss = 0.0
    batches = token_batches(targets.numel(), batch_tokens, generator)
    for idx in batches:
        loss = exit_norm_step_loss(exits, states[:, idx], targets[idx], generator)
        if loss.requires_grad:  # else every token of the batch exits at L, whose head is the model's
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        exit_loss += loss.item() / len(batches)
    return exit_loss


def train_policy_rounds(exits: DecoderExits, states: torch.Tensor, targets: torch.Tensor, policy_states: torch.Tensor,
                        policy_targets: torch.Tensor, cfg: PolicyTraining, generator: torch.Generator,
                        progress: Callable[[Iterable, int], Iterable] = _as_is,
                        on_round: Callable[[dict], None] | None = None) -> list[dict]:
    """ConsistentEE rounds from the current exits.

    Args:
        states, targets: ``[P, n, d]``, ``[n]`` the tokens the translators train on.
        policy_states, policy_targets: ``[P, m, d]``, ``[m]`` the tokens the policy learns from
            (held out from the translators, or the same tokens).
        progress: ``(batches, round) -> batches`` around each policy epoch.
        on_round: called with each round's record.

    Returns:
        ``[{"round", "reward", "exit_loss", "mean_pi": [P - 1]}]``: mean sampled reward, the exit
        epoch's mean loss, and the policy's mean exit probability per point but the last.
    """
    trainable = list(exits.translators.parameters())
    batches_per_epoch = math.ceil(policy_targets.numel() / cfg.batch_tokens)
    total_policy_steps = cfg.rounds * cfg.policy_epochs * batches_per_epoch
    policy_opt = torch.optim.AdamW(exits.policy.parameters(), lr=cfg.policy_lr, weight_decay=0.0)
    exit_opt = torch.optim.AdamW(trainable, lr=cfg.exit_lr, weight_decay=cfg.weight_decay) if trainable else None
    history, step = [], 0
    for r in range(1, cfg.rounds + 1):
        losses, correct = point_losses(exits, policy_states, policy_targets)
        memorized = memorized_exit_layer(exits, correct) if cfg.reward == "hardness" else None
        rewards = []
        for _ in range(cfg.policy_epochs):
            for idx in progress(token_batches(policy_targets.numel(), cfg.batch_tokens, generator), r):
                eps = epsilon_at(step, total_policy_steps, cfg.epsilon_start, cfg.epsilon_end)
                loss, info = policy_step_loss(exits, policy_states[:, idx], losses[:, idx], cfg.copies, cfg.alpha, eps,
                                              memorized[idx] if memorized is not None else None, generator)
                policy_opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(exits.policy.parameters(), 1.0)
                policy_opt.step()
                rewards.append(info["reward"])
                step += 1
        exit_loss = 0.0
        if exit_opt is not None:
            exit_loss = _exit_epoch(exits, states, targets, exit_opt, cfg.exit_batch_tokens, generator)
        with torch.no_grad():
            pi = torch.stack([exits.policy(p + 1, exits.normed(p, policy_states[p])) for p in range(len(exits.points))])
        record = {"round": r, "reward": float(np.mean(rewards)), "exit_loss": exit_loss, "mean_pi": pi[:-1].mean(1).tolist()}
        history.append(record)
        if on_round is not None:
            on_round(record)
    return history
