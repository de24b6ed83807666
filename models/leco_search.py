"""LECO's exit-architecture search loop (first-order DARTS over ``models.leco.search_epoch``); pure.

The loop of ``tasks/leco.py``'s ``search_exits`` without its files: the task hands in a
supernet (``MultiExitModel`` with ``head="leco"`` exits), batch makers and plain settings, and
saves each finished epoch's state (what a resumed search restores) through a callback.

Notation: L = layers (= exits), n = training rows. Architecture weights of one epoch:
``[per layer {choice: {op: softmax weight}}]`` (``LecoExits.architecture_weights``).

Each epoch re-splits the training rows 1:1 (``split_halves``, seed ``seed * 1000 + epoch``)
into D1 (model weights: AdamW with a linear warmup/decay schedule) and D2 (architecture
weights: AdamW at a constant rate), each half in its own seeded shuffled order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from models.exiting import MultiExitModel
from models.leco import derive_architecture, search_epoch, split_halves
from models.metrics import layerwise_scores
from models.training import build_optimizer, linear_schedule, record_exits

Batches = Iterable[dict[str, torch.Tensor]]


@dataclass(frozen=True)
class SearchConfig:
    """Plain settings of a search: ``lr``/``weight_decay``/``warmup_ratio``/``max_grad_norm`` for
    the model weights, ``architecture_lr``/``architecture_weight_decay`` for the alphas."""

    epochs: int
    steps_per_epoch: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    architecture_lr: float
    architecture_weight_decay: float


@dataclass
class SearchResult:
    """``history``: per epoch D1/D2 loss, dev layer-wise scores of the supernet's exits and the
    derived architecture; ``trajectory``: per epoch the architecture weights."""

    history: list[dict]
    trajectory: list[list[dict[str, dict[str, float]]]]


def search_orders(n_rows: int, seed: int, epoch: int) -> tuple[list[int], list[int]]:
    """One epoch's row orders ``(D1, D2)``: the seeded 1:1 split, each half shuffled (one more
    seeded generator, D1 drawn first)."""
    d1, d2 = split_halves(n_rows, seed * 1000 + epoch)
    shuffle = np.random.default_rng(seed * 1000 + epoch + 500)
    return shuffle.permutation(d1).tolist(), shuffle.permutation(d2).tolist()


def search_architecture(
    model: MultiExitModel,
    cfg: SearchConfig,
    epoch_batches: Callable[[int], tuple[Batches, Batches]],
    dev_batches: Callable[[], Batches],
    metric: str,
    resume: dict | None = None,
    on_epoch: Callable[[dict, list, dict], None] | None = None,
) -> SearchResult:
    """Search every exit's cell for ``cfg.epochs`` epochs (objective ``joint``).

    Args:
        epoch_batches: ``epoch -> (D1 batches, D2 batches)`` (e.g. in ``search_orders``).
        dev_batches: ``() -> batches`` over dev, recorded after every epoch.
        metric: the task metric (``models.metrics.task_score``).
        resume: a state handed to ``on_epoch`` by an earlier search; the search goes on after its
            epoch, restoring weights, both optimizers, the schedule and the torch RNG.
        on_epoch: ``(record, architecture weights, state)`` after each epoch; ``state`` (``model``,
            ``weight_optimizer``, ``architecture_optimizer``, ``scheduler``, ``rng``, ``history``,
            ``trajectory``, ``global_step``, ``epoch``) holds live tensors, to be saved at once.
    """
    alphas = model.heads.architecture_parameters()
    weight_optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, leave_out=alphas)
    architecture_optimizer = torch.optim.AdamW(alphas, lr=cfg.architecture_lr, weight_decay=cfg.architecture_weight_decay)
    total = cfg.steps_per_epoch * cfg.epochs
    scheduler = linear_schedule(weight_optimizer, int(cfg.warmup_ratio * total), total)
    history, trajectory, global_step, start = [], [], 0, 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        weight_optimizer.load_state_dict(resume["weight_optimizer"])
        architecture_optimizer.load_state_dict(resume["architecture_optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        history, trajectory, global_step, start = resume["history"], resume["trajectory"], resume["global_step"], resume["epoch"] + 1

    for epoch in range(start, cfg.epochs + 1):
        d1_batches, d2_batches = epoch_batches(epoch)
        global_step, d1_loss, d2_loss = search_epoch(model, d1_batches, d2_batches, weight_optimizer, architecture_optimizer,
                                                     scheduler, cfg.max_grad_norm, global_step=global_step)
        weights = model.heads.architecture_weights()
        trajectory.append(weights)
        rec = record_exits(model, dev_batches()).cpu()
        scores = layerwise_scores(metric, rec.logits, rec.labels, model.config.regression)
        record = {"epoch": epoch, "step": global_step, "d1_loss": d1_loss, "d2_loss": d2_loss,
                  "dev_layer_scores": scores, "dev_mean_score": float(np.mean(scores)),
                  "derived": derive_architecture(weights)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record, weights, {"model": model.state_dict(), "weight_optimizer": weight_optimizer.state_dict(),
                                       "architecture_optimizer": architecture_optimizer.state_dict(),
                                       "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                       "history": history, "trajectory": trajectory, "global_step": global_step,
                                       "epoch": epoch})
    return SearchResult(history, trajectory)
