"""Tasks: ConsistentEE's memorized layer, one iterative-training round, the hardness analysis.

Outputs::

    memorized_layer -> memorized.pt (memorized_layer [n], final_loss [n], fingerprint), histogram.png, result.json
    consistentee_round -> checkpoint/, result.json (policy step, heads step, dev before/after)
    hardness_analysis -> spearman.md / spearman.json (paper Table 1), result.json

A memorized-layer artifact belongs to one training split: its row count and the split's
content fingerprint (``tasks.features.split_fingerprint``) are checked before it is used.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from prefect import task
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from models.consistentee import (
    PolicyExit,
    fit_heads,
    fit_policy,
    forgetting_events,
    memorized_layer,
    policy_objective,
)
from models.criteria import simulate
from models.errors import CheckpointError, ExitflowError
from models.exit_heads import task_loss
from models.metrics import correct_predictions, layerwise_scores, prediction_is_correct, task_score
from models.training import record_exits
from tasks.backbones import load_checkpoint, pick_device, save_checkpoint
from tasks.caching import ARTIFACT_CACHE
from tasks.checkpoint_files import read_torch
from config.params import BackboneConfig, ConsistenteeConfig, TrainConfig
from tasks.features import batches, encode_split, num_batches, split_fingerprint
from tasks.io import atomic_torch_save, atomic_write_json, atomic_write_text, write_result
from tasks.plots import bar_plot
from tasks.metric_logger import MetricLogger, NullLogger
from tasks.train import seed_everything


class MemorizedLayerError(ExitflowError, ValueError):
    """A memorized-layer artifact does not belong to the training split it is used with."""


def _train_split(train: TrainConfig, backbone: BackboneConfig, tokenizer, data_dir: Path, cache_dir: Path | None, seed: int):
    return encode_split(data_dir, train.task, "train", tokenizer, backbone.max_length, cache_dir, train.subsample.train, seed)


@task(name="memorized_layer", cache_policy=ARTIFACT_CACHE, persist_result=True)
def compute_memorized_layer(train: TrainConfig, backbone: BackboneConfig, ckpt_dir: Path, data_dir: Path, out_dir: Path,
                            tolerance: float = 0.5, cache_dir: Path | None = None, seed: int = 42,
                            device: str = "auto", title: str = "") -> dict:
    """Eq. 7 on every training row with the checkpoint in eval mode; also the last exit's loss.

    Returns ``{"memorized": path, "histogram": [count of M = 1..L], "mean": ..., "plot": path}``.
    """
    out_dir = Path(out_dir)
    torch_device = pick_device(device)
    model, tokenizer, meta = load_checkpoint(ckpt_dir, backbone.attn_implementation)
    model.to(torch_device)
    enc = _train_split(train, backbone, tokenizer, data_dir, cache_dir, seed)
    rec = record_exits(model, batches(enc, 64, tokenizer.pad_token_id or 0, device=torch_device)).cpu()
    logits, labels = rec.logits, rec.labels
    regression = model.config.regression
    memorized = memorized_layer(correct_predictions(logits, labels, regression, tolerance))
    final_loss = task_loss(logits[-1], labels, regression)
    L = model.num_layers
    histogram = torch.bincount(memorized, minlength=L + 1)[1:].tolist()
    atomic_torch_save(out_dir / "memorized.pt", {"memorized_layer": memorized, "final_loss": final_loss,
                                                 "fingerprint": split_fingerprint(enc), "rows": len(enc["labels"])})
    plot = bar_plot(list(range(1, L + 1)), histogram, "memorized layer M", "training instances",
                    f"{meta['task']}: memorized layer {title}".strip(), out_dir / "histogram.png")
    return write_result(out_dir, {"memorized": out_dir / "memorized.pt", "histogram": histogram, "plot": Path(plot),
                                  "mean": memorized.float().mean().item(), "rows": len(enc["labels"])})


def load_memorized_layer(mem_dir: Path, enc: dict) -> torch.Tensor:
    """The memorized layer ``[n]`` saved in ``mem_dir``, checked against the encoded training split."""
    path = Path(mem_dir) / "memorized.pt"
    if not path.exists():
        raise MemorizedLayerError(f"{path}: no memorized-layer artifact; run the memorized_layer step first")
    saved = read_torch(path)
    rows = len(enc["labels"])
    if saved["rows"] != rows or len(saved["memorized_layer"]) != rows:
        raise MemorizedLayerError(f"{path}: memorized layer has {saved['rows']} rows but the training split has {rows}; "
                                  "recompute it for this split (train.task / train.subsample changed?)")
    if saved["fingerprint"] != split_fingerprint(enc):
        raise MemorizedLayerError(f"{path}: computed on different training rows (content hash "
                                  f"{saved['fingerprint'][:12]} != {split_fingerprint(enc)[:12]}); recompute it")
    return saved["memorized_layer"]


def dev_tradeoff(model, enc_dev: dict, cfg: ConsistenteeConfig, metric: str, pad: int, device) -> dict:
    """The policy at ``cfg.tau`` on dev: quality, average exit layer, layer speed-up, reward objective."""
    rec = record_exits(model, batches(enc_dev, 64, pad, device=device)).cpu()
    logits, labels = rec.logits, rec.labels
    regression = model.config.regression
    exit_layer, exit_logits = simulate(PolicyExit(cfg.tau), logits, rec.scores)
    scored = policy_objective(logits, rec.scores["policy"], labels, cfg.tau, cfg.alpha, regression, cfg.reward == "hardness",
                              cfg.regression_tolerance)
    L = logits.shape[0]
    return {"quality": task_score(metric, exit_logits, labels, regression), "avg_exit_layer": scored["avg_exit_layer"],
            "layer_speedup": L / scored["avg_exit_layer"], "objective": scored["objective"],
            "layer_scores": layerwise_scores(metric, logits, labels, regression)}


def round_batches(enc: dict, batch_size: int, pad: int, seed: int, round_index: int, steps: int, device, step: str,
                  total: int, epoch: int):
    """One epoch of a round's ``step`` (``"policy"`` or ``"heads"``): shuffled with its own seed, with a progress bar."""
    order_seed = seed + 7919 * round_index + (0 if step == "policy" else 1000) + epoch
    return tqdm(batches(enc, batch_size, pad, shuffle=True, seed=order_seed, device=device), total=steps,
                disable=None, leave=False, desc=f"round {round_index} {step} step, epoch {epoch}/{total}")


def report_policy_epoch(logger: MetricLogger, round_index: int, epoch: int, info: dict) -> None:
    tqdm.write(f"[consistentee] round {round_index} policy epoch {epoch}: reward {info['reward']:.4f}, "
               f"sampled exit layer {info['exit_layer']:.2f}")
    logger.log_metrics({f"policy_{k}": v for k, v in info.items()}, step=epoch)


def report_heads_epoch(logger: MetricLogger, round_index: int, epoch: int, info: dict) -> None:
    tqdm.write(f"[consistentee] round {round_index} heads epoch {epoch}: loss {info['loss']:.4f}")
    logger.log_metrics({f"heads_{k}": v for k, v in info.items()}, step=epoch)


@task(name="consistentee_round", cache_policy=ARTIFACT_CACHE, persist_result=True)
def consistentee_round(consistentee: ConsistenteeConfig, train: TrainConfig, backbone: BackboneConfig, ckpt_dir: Path,
                       memorized_dir: Path, data_dir: Path, out_dir: Path, round_index: int, cache_dir: Path | None = None,
                       seed: int = 42, device: str = "auto", logger: MetricLogger | None = None) -> dict:
    """One round: (3) policy step with backbone and heads frozen, (4) heads + backbone step with
    the policy frozen; the dev trade-off before and after.

    Returns ``{"checkpoint", "policy": {...}, "heads": {...}, "dev_before": {...}, "dev": {...}}``.
    """
    cfg, logger = consistentee, logger or NullLogger()
    out_dir = Path(out_dir)
    torch_device = pick_device(device)
    seed_everything(seed + round_index)
    model, tokenizer, meta = load_checkpoint(ckpt_dir, backbone.attn_implementation)
    if model.config.scorer != "policy":
        raise CheckpointError(f"{ckpt_dir}: not a ConsistentEE checkpoint (no policy networks)")
    model.to(torch_device)
    pad = tokenizer.pad_token_id or 0
    enc = _train_split(train, backbone, tokenizer, data_dir, cache_dir, seed)
    enc["memorized"] = load_memorized_layer(memorized_dir, enc).tolist()
    enc_dev = encode_split(data_dir, train.task, "dev", tokenizer, backbone.max_length, cache_dir, train.subsample.dev, seed)
    before = dev_tradeoff(model, enc_dev, cfg, meta["metric"], pad, torch_device)
    generator = torch.Generator().manual_seed(seed + round_index)
    steps = num_batches(enc, train.batch_size)
    epochs = partial(round_batches, enc, train.batch_size, pad, seed, round_index, steps, torch_device)
    policy_info = fit_policy(model, partial(epochs, "policy", cfg.policy_epochs), steps, cfg.policy_epochs, cfg.policy_lr,
                             cfg.copies, cfg.alpha, cfg.epsilon_start, cfg.epsilon_end, cfg.reward == "hardness", generator,
                             train.max_grad_norm, partial(report_policy_epoch, logger, round_index))
    heads_info = fit_heads(model, partial(epochs, "heads", cfg.heads_epochs), steps, cfg.heads_epochs, cfg.heads_lr,
                           train.weight_decay, train.warmup_ratio, generator, train.max_grad_norm,
                           partial(report_heads_epoch, logger, round_index))

    after = dev_tradeoff(model, enc_dev, cfg, meta["metric"], pad, torch_device)
    logger.log_metrics({"dev_quality": after["quality"], "dev_layer_speedup": after["layer_speedup"],
                        "dev_objective": after["objective"], "dev_avg_exit_layer": after["avg_exit_layer"]})
    ckpt = save_checkpoint(model.cpu(), tokenizer, out_dir / "checkpoint",
                           {**meta, "strategy": "consistentee", "round": round_index, "consistentee": cfg.model_dump(mode="json")})
    return write_result(out_dir, {"checkpoint": Path(ckpt), "round": round_index, "policy": policy_info,
                                  "heads": heads_info, "dev_before": before, "dev": after})


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho, or None when either side is constant (undefined)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def _fmt(rho: float | None) -> str:
    return "undefined (constant)" if rho is None else f"{rho:.3f}"


@task(name="hardness_analysis", cache_policy=ARTIFACT_CACHE, persist_result=True)
def hardness_analysis(dynamics_path: Path, memorized_dir: Path, out_dir: Path, tolerance: float = 0.5) -> dict:
    """Paper Table 1: Spearman's rho of the memorized layer (after initialisation) with the
    per-instance loss of the last exit and with forgetting events across the init epochs.

    Forgetting events are counted on the last exit's predictions at the recorded evaluations.
    """
    out_dir = Path(out_dir)
    dyn = read_torch(dynamics_path)
    mem = read_torch(Path(memorized_dir) / "memorized.pt")
    if dyn["fingerprint"] != mem["fingerprint"]:
        raise MemorizedLayerError(f"{memorized_dir}: memorized layer and training dynamics ({dynamics_path}) "
                                  "come from different training rows")
    preds, labels = dyn["predictions"], dyn["labels"]  # [E, L, n], [n]
    correct = prediction_is_correct(preds[:, -1], labels, preds.is_floating_point(), tolerance)
    forgotten = forgetting_events(correct)
    m = mem["memorized_layer"].numpy()
    rho_loss, rho_forget = _spearman(m, mem["final_loss"].numpy()), _spearman(m, forgotten.numpy())
    table = {"spearman_loss": rho_loss, "spearman_forgetting": rho_forget,
             "evaluations": int(preds.shape[0]), "rows": int(len(m)),
             "mean_forgetting_events": forgotten.float().mean().item(),
             "share_ever_forgotten": (forgotten > 0).float().mean().item()}
    text = ("| Spearman correlation with the memorized layer | loss | forgetting events |\n|---|---|---|\n"
            f"| this run ({table['rows']} training rows, {table['evaluations']} evaluations) | "
            f"{_fmt(rho_loss)} | {_fmt(rho_forget)} |\n")
    atomic_write_json(out_dir / "spearman.json", table)
    atomic_write_text(out_dir / "spearman.md", text)
    return write_result(out_dir, {"table": table, "markdown": out_dir / "spearman.md", "json": out_dir / "spearman.json"})
