"""Task: train a multi-exit model with one objective; checkpoints every epoch and resumes.

Outputs in ``out_dir``::

    checkpoint/     the dev-selected model (see ``tasks.backbones.save_checkpoint``)
    history.json    per-epoch train loss and dev layer-wise scores
    result.json     stamp: paths and scalar metrics (what the task returns)
    _resume/        last finished epoch (model, optimizer, scheduler, RNG); removed when done

Selection: after each epoch of the final stage, the model with the best mean dev score over
the exits the objective trains is kept (``models.objectives.trained_exits``: the last exit for
``single``, every exit otherwise; two_stage's stage 1 keeps its last epoch). Test is never read here.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from prefect import task
from tqdm.auto import tqdm

from models.exiting import MultiExitConfig, MultiExitModel
from models.adapters import adapter_for
from models.hashee import HashEEModel
from models.metrics import chance_check, layerwise_scores, predictions_tensor
from models.objectives import selection_score
from models.training import build_optimizer, linear_schedule, record_exits, stochastic_freeze, train_epoch
from tasks.backbones import load_backbone, pick_device, save_checkpoint, truncate_layers
from tasks.caching import ARTIFACT_CACHE
from tasks.config import BackboneConfig, ConfigError, TrainConfig
from tasks.data import DataError, load_meta
from tasks.features import batches, encode_split, num_batches, split_fingerprint
from tasks.hashing import load_hash_table
from tasks.io import atomic_torch_save, atomic_write_json, portable_path, write_result
from tasks.tracking import MetricLogger, NullLogger

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def at_chance_message(check: dict, what: str, train: TrainConfig) -> str:
    """The loud line for a model whose full-depth exit did not beat the label prior on dev."""
    return (f"WARNING: {what}: the full-depth exit is at chance level on dev (score {check['score']:.2f} vs "
            f"majority class {check['majority_score']:.2f}; loss {check['loss']:.4f} vs chance-level loss "
            f"{check['chance_loss']:.4f}). The model did not learn the task and its exit speed-ups are meaningless: "
            f"try another train.lr (now {train.lr:g}) or more train.epochs (now {train.epochs}).")


def warn_if_at_chance(check: dict, what: str, train: TrainConfig) -> None:
    if check["at_chance"]:
        message = at_chance_message(check, what, train)
        tqdm.write(message)
        log.warning(message)


def exit_config(train: TrainConfig, spec: dict) -> MultiExitConfig:
    """The exits ``train`` describes for a task of this ``spec`` (``load_meta(...)["spec"]``)."""
    regression = spec["label_type"] == "float"
    num_outputs = 1 if regression else (len(spec["label_names"]) if spec["label_names"] else spec["num_labels"])
    return MultiExitConfig(num_outputs=num_outputs, regression=regression, head=train.head,
                           head_options=dict(train.head_options), head_dropout=train.head_dropout,
                           pooling=train.pooling, scorer=train.exit_scorer)


@task(name="train_multi_exit", cache_policy=ARTIFACT_CACHE, persist_result=True)
def train_multi_exit(
    train: TrainConfig,
    backbone: BackboneConfig,
    strategy: str,
    data_dir: Path,
    out_dir: Path,
    cache_dir: Path | None = None,
    seed: int = 42,
    device: str = "auto",
    logger: MetricLogger | None = None,
    num_layers: int | None = None,
    hash_table_dir: Path | None = None,
    dynamics_evals_per_epoch: int = 0,
) -> dict:
    """Fine-tune backbone + exits on ``train.task`` with objective ``strategy``.

    ``num_layers`` keeps only the backbone's first layers; ``hash_table_dir`` makes it a HashEE
    model (token-level exits from that table, which must match the tokenizer and depth).
    ``train.exit_scorer`` names the exit scorer built on the exits (LTE, ConsistentEE's policy, none).
    ``dynamics_evals_per_epoch > 0`` records every exit's predictions on the training rows
    that many times per epoch, evenly spaced (``train_dynamics.pt``: ``predictions [E, L, n]``,
    ``labels [n]``, ``steps [E]``, ``fingerprint``), for forgetting events.

    Returns ``{"checkpoint": path, "strategy": ..., "dev_layer_scores": [...], ...}``.
    """
    logger = logger or NullLogger()
    out_dir = Path(out_dir)
    dev_ = pick_device(device)
    meta = load_meta(data_dir, train.task)
    spec = meta["spec"]
    if "train" not in meta["rows"] or "dev" not in meta["rows"]:
        raise DataError(f"task {train.task!r} needs train and dev splits to train; it has {', '.join(meta['rows'])}")
    regression = spec["label_type"] == "float"

    seed_everything(seed)
    backbone_model, tokenizer = load_backbone(backbone.name, backbone.attn_implementation)
    backbone_model = truncate_layers(backbone_model, num_layers)
    config = exit_config(train, spec)
    if hash_table_dir is not None:
        layers = adapter_for(backbone_model).num_layers
        model = HashEEModel(backbone_model, config, load_hash_table(hash_table_dir, tokenizer, layers))
    else:
        model = MultiExitModel(backbone_model, config)
    model = model.to(dev_)
    if not 0 <= train.freeze_layers < model.num_layers:
        raise ConfigError(f"freeze_layers (the bottom layers frozen during fine-tuning) is {train.freeze_layers}; expected "
                          f"0..{model.num_layers - 1} for this {model.num_layers}-layer backbone")
    enc_train = encode_split(data_dir, train.task, "train", tokenizer, backbone.max_length, cache_dir, train.subsample.train, seed)
    enc_dev = encode_split(data_dir, train.task, "dev", tokenizer, backbone.max_length, cache_dir, train.subsample.dev, seed)
    pad = tokenizer.pad_token_id or 0

    stages = [1, 2] if strategy == "two_stage" else [1]
    steps_per_epoch = num_batches(enc_train, train.batch_size)
    resume_path = out_dir / "_resume" / "state.pt"
    history: list[dict] = []
    dynamics: list[tuple[int, torch.Tensor]] = []  # (global step, predictions [L, n]) on the training rows
    record_at = {round(steps_per_epoch * (i + 1) / dynamics_evals_per_epoch) for i in range(dynamics_evals_per_epoch)}

    def record_dynamics(step: int, _loss: float) -> None:
        if (step - 1) % steps_per_epoch + 1 in record_at:
            logits = record_exits(model, batches(enc_train, 64, pad, device=dev_)).logits.cpu()
            dynamics.append((step, predictions_tensor(logits, config.regression)))
            model.train()

    def freeze(step: int) -> None:  # Past-Future section 3.4: bottom layers frozen with p decaying 1 -> 0
        model.detached_layers = stochastic_freeze(train.freeze_layers, step, steps_per_epoch * train.epochs * len(stages), seed)

    best = {"score": -float("inf"), "state": None, "epoch": None}
    start_stage, start_epoch, global_step = 1, 1, 0
    resumed = None
    if resume_path.exists():
        resumed = torch.load(resume_path, weights_only=False)
        model.load_state_dict(resumed["model"])
        history, best, global_step = resumed["history"], resumed["best"], resumed["global_step"]
        dynamics = resumed.get("dynamics", [])
        start_stage, start_epoch = resumed["stage"], resumed["epoch"] + 1
        if start_epoch > train.epochs:
            start_stage, start_epoch = start_stage + 1, 1
        next_step = (f"continuing at stage {start_stage} epoch {start_epoch}" if start_stage <= stages[-1]
                     else "all epochs done, selecting the checkpoint")
        tqdm.write(f"[{strategy}] resuming {train.task} training from {resume_path.parent}: stage {resumed['stage']} "
                   f"epoch {resumed['epoch']}/{train.epochs} finished earlier, {next_step}")

    for stage in stages:
        if stage < start_stage:
            continue
        optimizer = build_optimizer(model, train.lr, train.weight_decay)
        total = steps_per_epoch * train.epochs
        scheduler = linear_schedule(optimizer, int(train.warmup_ratio * total), total)
        if resumed is not None and resumed["stage"] == stage and start_epoch > 1:
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            torch.set_rng_state(resumed["rng"])
        final_stage = stage == stages[-1]
        for epoch in range(start_epoch if stage == start_stage else 1, train.epochs + 1):
            bar = tqdm(batches(enc_train, train.batch_size, pad, shuffle=True, seed=seed + 1000 * stage + epoch, device=dev_),
                       total=steps_per_epoch, disable=None, desc=f"{strategy} stage {stage} epoch {epoch}/{train.epochs}", leave=False)
            global_step, loss = train_epoch(model, bar, optimizer, scheduler, strategy, global_step, stage, train.max_grad_norm,
                                            on_step=record_dynamics if dynamics_evals_per_epoch else None,
                                            before_step=freeze if train.freeze_layers else None)
            rec = record_exits(model, batches(enc_dev, 64, pad, device=dev_)).cpu()
            scores = layerwise_scores(spec["metric"], rec.logits, rec.labels, regression)
            mean_score = float(np.mean(scores))
            selected_by = selection_score(strategy, scores)  # untrained heads never choose the epoch
            record = {"stage": stage, "epoch": epoch, "step": global_step, "train_loss": loss,
                      "dev_layer_scores": scores, "dev_mean_score": mean_score, "dev_selection_score": selected_by,
                      "dev_chance_check": chance_check(spec["metric"], rec.logits[-1], rec.labels, regression)}
            history.append(record)
            tqdm.write(f"[{strategy}] stage {stage} epoch {epoch}: loss {loss:.4f}, dev mean layer score {mean_score:.2f}, last layer {scores[-1]:.2f}")
            logger.log_metrics({"train_loss": loss, "dev_mean_layer_score": mean_score,
                                **{f"dev_layer_{k}": s for k, s in enumerate(scores, 1)}}, step=len(history))
            if final_stage and selected_by > best["score"]:
                best = {"score": selected_by, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                        "epoch": epoch}
            atomic_torch_save(resume_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                       "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                       "history": history, "best": best, "global_step": global_step, "dynamics": dynamics,
                                       "stage": stage, "epoch": epoch})
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    best_record = next(r for r in history if r["stage"] == stages[-1] and r["epoch"] == best["epoch"])
    warn_if_at_chance(best_record["dev_chance_check"], f"{train.task} ({strategy})", train)
    ckpt = save_checkpoint(model.cpu(), tokenizer, out_dir / "checkpoint", {
        "task": train.task, "strategy": strategy, "backbone": backbone.name, "metric": spec["metric"],
        "train_config": train.record(), "selected_epoch": best["epoch"], "seed": seed,
        "hash_table_dir": portable_path(hash_table_dir, out_dir) if hash_table_dir is not None else None,
    })
    atomic_write_json(out_dir / "history.json", history)
    if dynamics:
        atomic_torch_save(out_dir / "train_dynamics.pt", {
            "steps": [s for s, _ in dynamics], "predictions": torch.stack([p for _, p in dynamics]),
            "labels": torch.tensor(enc_train["labels"]), "fingerprint": split_fingerprint(enc_train)})
    result = {"checkpoint": Path(ckpt), "strategy": strategy, "task": train.task,
              "dev_layer_scores": best_record["dev_layer_scores"], "dev_mean_score": best_record["dev_mean_score"],
              "selected_epoch": best["epoch"], "dev_chance_check": best_record["dev_chance_check"], "train_rows": len(enc_train["labels"])}
    result = write_result(out_dir, result)
    shutil.rmtree(out_dir / "_resume", ignore_errors=True)
    return result
