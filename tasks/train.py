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
from models.fitting import FitConfig, FitResult, fit_multi_exit, resume_point
from tasks.backbones import load_backbone, pick_device, save_checkpoint, truncate_layers
from tasks.caching import ARTIFACT_CACHE
from config.params import BackboneConfig, ConfigError, TrainConfig
from tasks.data import DataError, load_meta
from tasks.failpoints import passing
from tasks.features import batches, encode_split, num_batches, split_fingerprint
from tasks.hash_table import load_hash_table
from tasks.io import atomic_torch_save, atomic_write_json, portable_path, write_result
from tasks.metric_logger import MetricLogger, NullLogger

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


def build_model(train: TrainConfig, backbone: BackboneConfig, spec: dict, num_layers: int | None,
                hash_table_dir: Path | None, device) -> tuple[MultiExitModel, object]:
    """The backbone (first ``num_layers`` layers) with ``train``'s exits, a HashEE model when
    ``hash_table_dir`` is given; ``(model on device, tokenizer)``."""
    backbone_model, tokenizer = load_backbone(backbone.name, backbone.attn_implementation)
    backbone_model = truncate_layers(backbone_model, num_layers)
    config = exit_config(train, spec)
    if hash_table_dir is not None:
        layers = adapter_for(backbone_model).num_layers
        model = HashEEModel(backbone_model, config, load_hash_table(hash_table_dir, tokenizer, layers))
    else:
        model = MultiExitModel(backbone_model, config)
    model = model.to(device)
    if not 0 <= train.freeze_layers < model.num_layers:
        raise ConfigError(f"freeze_layers (the bottom layers frozen during fine-tuning) is {train.freeze_layers}; expected "
                          f"0..{model.num_layers - 1} for this {model.num_layers}-layer backbone")
    return model, tokenizer


def load_resume_state(resume_path: Path, cfg: FitConfig, task_name: str) -> dict | None:
    """The last finished epoch's state saved in ``resume_path`` (None without one), said aloud."""
    if not resume_path.exists():
        return None
    resumed = torch.load(resume_path, weights_only=False)
    start_stage, start_epoch = resume_point(resumed, cfg.epochs)
    next_step = (f"continuing at stage {start_stage} epoch {start_epoch}" if start_stage <= cfg.stages[-1]
                 else "all epochs done, selecting the checkpoint")
    tqdm.write(f"[{cfg.objective}] resuming {task_name} training from {resume_path.parent}: stage {resumed['stage']} "
               f"epoch {resumed['epoch']}/{cfg.epochs} finished earlier, {next_step}")
    return resumed


def fit_config(train: TrainConfig, strategy: str, steps_per_epoch: int, seed: int, dynamics_evals_per_epoch: int) -> FitConfig:
    return FitConfig(objective=strategy, epochs=train.epochs, steps_per_epoch=steps_per_epoch, lr=train.lr,
                     weight_decay=train.weight_decay, warmup_ratio=train.warmup_ratio, max_grad_norm=train.max_grad_norm,
                     freeze_layers=train.freeze_layers, seed=seed, dynamics_evals_per_epoch=dynamics_evals_per_epoch)


def fit_batches(enc_train: dict, enc_dev: dict, cfg: FitConfig, train: TrainConfig, pad: int, device):
    """The batch makers ``fit_multi_exit`` reads: each epoch's shuffled training batches (seed
    ``cfg.seed + 1000 * stage + epoch``, with a progress bar), dev, and the training rows in order."""

    def epoch_batches(stage: int, epoch: int):
        shuffled = batches(enc_train, train.batch_size, pad, shuffle=True, seed=cfg.seed + 1000 * stage + epoch, device=device)
        return tqdm(passing(shuffled, "train.batch"), total=cfg.steps_per_epoch, disable=None,
                    desc=f"{cfg.objective} stage {stage} epoch {epoch}/{cfg.epochs}", leave=False)

    def dev_batches():
        return batches(enc_dev, 64, pad, device=device)

    def train_rows():
        return batches(enc_train, 64, pad, device=device)

    return epoch_batches, dev_batches, train_rows


def epoch_reporter(strategy: str, logger: MetricLogger, resume_path: Path):
    """After each epoch: the progress line, the metrics, and the state to resume from (saved atomically)."""

    def finish_epoch(record: dict, state: dict) -> None:
        scores, mean_score = record["dev_layer_scores"], record["dev_mean_score"]
        tqdm.write(f"[{strategy}] stage {record['stage']} epoch {record['epoch']}: loss {record['train_loss']:.4f}, "
                   f"dev mean layer score {mean_score:.2f}, last layer {scores[-1]:.2f}")
        logger.log_metrics({"train_loss": record["train_loss"], "dev_mean_layer_score": mean_score,
                            **{f"dev_layer_{k}": s for k, s in enumerate(scores, 1)}}, step=len(state["history"]))
        atomic_torch_save(resume_path, state)

    return finish_epoch


def save_fit_outputs(out_dir: Path, fit: FitResult, enc_train: dict) -> None:
    """``history.json``, and ``train_dynamics.pt`` when the fit recorded dynamics."""
    atomic_write_json(out_dir / "history.json", fit.history)
    if fit.dynamics:
        atomic_torch_save(out_dir / "train_dynamics.pt", {
            "steps": [s for s, _ in fit.dynamics], "predictions": torch.stack([p for _, p in fit.dynamics]),
            "labels": torch.tensor(enc_train["labels"]), "fingerprint": split_fingerprint(enc_train)})


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
    Regression exits start at the training labels' mean (``MultiExitModel.start_regression_at``).
    ``dynamics_evals_per_epoch > 0`` records every exit's predictions on the training rows
    that many times per epoch, evenly spaced (``train_dynamics.pt``: ``predictions [E, L, n]``,
    ``labels [n]``, ``steps [E]``, ``fingerprint``), for forgetting events.

    Returns ``{"checkpoint": path, "strategy": ..., "dev_layer_scores": [...], ...}``.
    """
    logger = logger or NullLogger()
    out_dir = Path(out_dir)
    torch_device = pick_device(device)
    meta = load_meta(data_dir, train.task)
    spec = meta["spec"]
    if "train" not in meta["rows"] or "dev" not in meta["rows"]:
        raise DataError(f"task {train.task!r} needs train and dev splits to train; it has {', '.join(meta['rows'])}")
    seed_everything(seed)
    model, tokenizer = build_model(train, backbone, spec, num_layers, hash_table_dir, torch_device)
    enc_train = encode_split(data_dir, train.task, "train", tokenizer, backbone.max_length, cache_dir, train.subsample.train, seed)
    enc_dev = encode_split(data_dir, train.task, "dev", tokenizer, backbone.max_length, cache_dir, train.subsample.dev, seed)
    model.start_regression_at(enc_train["labels"])
    pad = tokenizer.pad_token_id or 0
    cfg = fit_config(train, strategy, num_batches(enc_train, train.batch_size), seed, dynamics_evals_per_epoch)
    resume_path = out_dir / "_resume" / "state.pt"

    epoch_batches, dev_batches, train_rows = fit_batches(enc_train, enc_dev, cfg, train, pad, torch_device)
    fit = fit_multi_exit(model, cfg, epoch_batches, dev_batches, spec["metric"], train_rows,
                         resume=load_resume_state(resume_path, cfg, train.task),
                         on_epoch=epoch_reporter(strategy, logger, resume_path))
    warn_if_at_chance(fit.selected["dev_chance_check"], f"{train.task} ({strategy})", train)
    ckpt = save_checkpoint(model.cpu(), tokenizer, out_dir / "checkpoint", {
        "task": train.task, "strategy": strategy, "backbone": backbone.name, "metric": spec["metric"],
        "train_config": train.record(), "selected_epoch": fit.selected_epoch, "seed": seed,
        "hash_table_dir": portable_path(hash_table_dir, out_dir) if hash_table_dir is not None else None,
    })
    save_fit_outputs(out_dir, fit, enc_train)
    result = {"checkpoint": Path(ckpt), "strategy": strategy, "task": train.task,
              "dev_layer_scores": fit.selected["dev_layer_scores"], "dev_mean_score": fit.selected["dev_mean_score"],
              "selected_epoch": fit.selected_epoch, "dev_chance_check": fit.selected["dev_chance_check"],
              "train_rows": len(enc_train["labels"])}
    result = write_result(out_dir, result)
    shutil.rmtree(out_dir / "_resume", ignore_errors=True)
    return result
