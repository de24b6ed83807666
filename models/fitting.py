"""Fitting a multi-exit model: stages, epochs, dev selection and resumable state; pure functions.

The loop of ``tasks/train.py``'s ``train_multi_exit`` without its files: the task hands in the
model, batch makers and plain settings, and gets back the history and the selected epoch; it
saves each finished epoch's ``FitState.checkpoint`` (what a resumed run restores) through a
callback.

Notation: L = exits (one per layer), n = training rows, E = dynamics recordings.

Stages: ``two_stage`` runs stage 1 (backbone + last exit) then stage 2 (the other exits), each
for ``epochs`` epochs with a fresh optimizer and schedule; every other objective has stage 1
only. Selection: after each epoch of the final stage, the weights with the best
``models.objectives.selection_score`` on dev are kept (two_stage's stage 1 never chooses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from models.exiting import MultiExitModel
from models.metrics import chance_check, layerwise_scores, predictions_tensor
from models.objectives import selection_score
from models.training import (
    build_optimizer,
    linear_schedule,
    record_exits,
    stochastic_freeze,
    train_epoch,
)

Batches = Iterable[dict[str, torch.Tensor]]


@dataclass(frozen=True)
class FitConfig:
    """Plain settings of a fit (``config.params.TrainConfig`` holds them in the pipeline).

    ``lr``: AdamW's base learning rate, warmed up over ``warmup_ratio`` of each stage's steps,
    then decayed linearly to 0; ``freeze_layers``: bottom layers stochastically detached
    (``models.training.stochastic_freeze``, drawn from ``seed``); ``dynamics_evals_per_epoch``:
    recordings of every exit's predictions on the training rows per epoch, evenly spaced.
    """

    objective: str
    epochs: int
    steps_per_epoch: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    freeze_layers: int = 0
    seed: int = 42
    dynamics_evals_per_epoch: int = 0

    @property
    def stages(self) -> list[int]:
        return [1, 2] if self.objective == "two_stage" else [1]


@dataclass
class FitResult:
    """What a fit returns; the model ends with the selected epoch's weights.

    Attributes:
        history: one record per finished epoch (``dev_epoch_record``), all stages.
        selected_epoch: the final stage's epoch whose weights were kept.
        selected: that epoch's record.
        dynamics: ``[(global step, predictions [L, n])]``, one per dynamics recording.
    """

    history: list[dict]
    selected_epoch: int
    selected: dict
    dynamics: list[tuple[int, torch.Tensor]] = field(default_factory=list)


def resume_point(state: dict, epochs: int) -> tuple[int, int]:
    """``(stage, epoch)`` a run continues at after a saved ``state`` (the epoch after its own;
    the next stage's first when its stage is complete; a stage past the last when all are)."""
    stage, epoch = state["stage"], state["epoch"] + 1
    if epoch > epochs:
        stage, epoch = stage + 1, 1
    return stage, epoch


def dynamics_steps(steps_per_epoch: int, evals_per_epoch: int) -> set[int]:
    """The 1-based steps within an epoch after which the training rows are recorded."""
    return {round(steps_per_epoch * (i + 1) / evals_per_epoch) for i in range(evals_per_epoch)}


def dev_epoch_record(metric: str, objective: str, logits: torch.Tensor, labels: torch.Tensor, regression: bool,
                     stage: int, epoch: int, step: int, train_loss: float) -> dict:
    """One history record from the dev recording after an epoch.

    Args:
        logits: ``[L, n_dev, c]`` every exit's output on dev.
        labels: ``[n_dev]``.
        step: optimizer steps so far; ``train_loss``: the epoch's mean loss.
    """
    scores = layerwise_scores(metric, logits, labels, regression)
    return {"stage": stage, "epoch": epoch, "step": step, "train_loss": train_loss,
            "dev_layer_scores": scores, "dev_mean_score": float(np.mean(scores)),
            "dev_selection_score": selection_score(objective, scores),  # untrained heads never choose the epoch
            "dev_chance_check": chance_check(metric, logits[-1], labels, regression)}


def fit_multi_exit(
    model: MultiExitModel,
    cfg: FitConfig,
    train_batches: Callable[[int, int], Batches],
    dev_batches: Callable[[], Batches],
    metric: str,
    train_rows: Callable[[], Batches] | None = None,
    resume: dict | None = None,
    on_epoch: Callable[[dict, dict], None] | None = None,
) -> FitResult:
    """Train every stage of ``cfg.objective``, keeping the best final-stage epoch on dev.

    Args:
        train_batches: ``(stage, epoch) -> batches`` of that epoch (shuffled by the caller).
        dev_batches: ``() -> batches`` over dev, read after every epoch.
        metric: the task metric (``models.metrics.task_score``).
        train_rows: ``() -> batches`` over the training rows in order, recorded
            ``cfg.dynamics_evals_per_epoch`` times per epoch.
        resume: a ``checkpoint`` state handed to ``on_epoch`` by an earlier run; the fit goes on
            after its epoch, restoring weights, optimizer, schedule and the torch RNG.
        on_epoch: ``(record, checkpoint)`` after each epoch: the epoch's history record and the
            state to resume from (``model``, ``optimizer``, ``scheduler``, ``rng``, ``history``,
            ``best``, ``global_step``, ``dynamics``, ``stage``, ``epoch``; live tensors, to be
            saved at once).

    Returns:
        ``FitResult``; the model holds the selected epoch's weights.
    """
    regression = model.config.regression
    stages = cfg.stages
    history: list[dict] = []
    dynamics: list[tuple[int, torch.Tensor]] = []
    record_at = dynamics_steps(cfg.steps_per_epoch, cfg.dynamics_evals_per_epoch)
    best = {"score": -float("inf"), "state": None, "epoch": None}
    start_stage, start_epoch, global_step = 1, 1, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        history, best, global_step = resume["history"], resume["best"], resume["global_step"]
        dynamics = resume.get("dynamics", [])
        start_stage, start_epoch = resume_point(resume, cfg.epochs)

    def record_dynamics(step: int, _loss: float) -> None:
        if (step - 1) % cfg.steps_per_epoch + 1 in record_at:
            logits = record_exits(model, train_rows()).logits.cpu()
            dynamics.append((step, predictions_tensor(logits, regression)))
            model.train()

    def freeze(step: int) -> None:  # Past-Future section 3.4: bottom layers frozen with p decaying 1 -> 0
        model.detached_layers = stochastic_freeze(cfg.freeze_layers, step, cfg.steps_per_epoch * cfg.epochs * len(stages),
                                                  cfg.seed)

    for stage in stages:
        if stage < start_stage:
            continue
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        total = cfg.steps_per_epoch * cfg.epochs
        scheduler = linear_schedule(optimizer, int(cfg.warmup_ratio * total), total)
        if resume is not None and resume["stage"] == stage and start_epoch > 1:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            torch.set_rng_state(resume["rng"])
        final_stage = stage == stages[-1]
        for epoch in range(start_epoch if stage == start_stage else 1, cfg.epochs + 1):
            global_step, loss = train_epoch(model, train_batches(stage, epoch), optimizer, scheduler, cfg.objective,
                                            global_step, stage, cfg.max_grad_norm,
                                            on_step=record_dynamics if cfg.dynamics_evals_per_epoch else None,
                                            before_step=freeze if cfg.freeze_layers else None)
            rec = record_exits(model, dev_batches()).cpu()
            record = dev_epoch_record(metric, cfg.objective, rec.logits, rec.labels, regression, stage, epoch, global_step, loss)
            history.append(record)
            if final_stage and record["dev_selection_score"] > best["score"]:
                best = {"score": record["dev_selection_score"],
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, "epoch": epoch}
            if on_epoch is not None:
                on_epoch(record, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                  "history": history, "best": best, "global_step": global_step, "dynamics": dynamics,
                                  "stage": stage, "epoch": epoch})
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    selected = next(r for r in history if r["stage"] == stages[-1] and r["epoch"] == best["epoch"])
    return FitResult(history, best["epoch"], selected, dynamics)
