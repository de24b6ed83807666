"""Tasks: LECO's exit-architecture search, its derivation and the architecture checks (the
comparisons, paper Table 2 and Figure 2 shape, are ``tasks.reports.leco``).

``search_exits`` (first-order DARTS, ``models.leco.search_epoch``) writes in ``out_dir``::

    architecture_weights.json   {"epochs": [per epoch: per layer {choice: {op: weight}}], ...}
    history.json                per epoch: D1 / D2 loss, dev layer-wise scores (supernet exits)
    architecture_weights.png    heat map per layer: every candidate's weight per epoch
    result.json                 stamp
    _resume/                    the last finished epoch; removed when done

``derive_exits`` turns the last epoch's weights into ``architecture.json`` (per layer
``{choice: op}``) and ``architecture.md`` (the paper's Table 6 shape).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from prefect import task
from tqdm.auto import tqdm

from models.errors import CheckpointError, MissingCheckpointError
from models.exiting import MultiExitModel
from models.leco import ENCODER_SLOTS, SEARCH_SPACE, check_architecture, derive_architecture, search_epoch, split_halves
from models.metrics import layerwise_scores
from models.training import build_optimizer, linear_schedule, record_exits
from tasks.backbones import load_backbone, pick_device
from tasks.caching import ARTIFACT_CACHE
from tasks.config import BackboneConfig, LecoConfig, TrainConfig
from tasks.data import load_meta
from tasks.features import batches, encode_split
from tasks.io import atomic_torch_save, atomic_write_json, atomic_write_text, write_result
from tasks.plots import architecture_heatmap
from tasks.tracking import MetricLogger, NullLogger
from tasks.train import exit_config, seed_everything

ARCHITECTURE_FILE = "architecture.json"


@task(name="search_exits", cache_policy=ARTIFACT_CACHE, persist_result=True)
def search_exits(
    train: TrainConfig,
    backbone: BackboneConfig,
    leco: LecoConfig,
    data_dir: Path,
    out_dir: Path,
    cache_dir: Path | None = None,
    seed: int = 42,
    device: str = "auto",
    logger: MetricLogger | None = None,
) -> dict:
    """Search one exit cell per layer on ``train.task`` (objective ``joint``, no exit scorer).

    Model weights (backbone + exits): AdamW at ``train.lr`` with ``train``'s warmup/decay;
    architecture weights: AdamW at ``leco.architecture_lr``, constant. Each epoch re-splits
    the training rows 1:1 (seed ``seed * 1000 + epoch``) into D1 (weights) and D2 (alphas).
    """
    logger = logger or NullLogger()
    out_dir = Path(out_dir)
    dev_ = pick_device(device)
    spec = load_meta(data_dir, train.task)["spec"]
    seed_everything(seed)
    backbone_model, tokenizer = load_backbone(backbone.name, backbone.attn_implementation)
    searched = train.model_copy(update={"head": "leco", "head_options": leco.exits(), "exit_scorer": None})
    model = MultiExitModel(backbone_model, exit_config(searched, spec)).to(dev_)
    alphas = model.heads.architecture_parameters()
    weight_optimizer = build_optimizer(model, train.lr, train.weight_decay, leave_out=alphas)
    architecture_optimizer = torch.optim.AdamW(alphas, lr=leco.architecture_lr, weight_decay=leco.architecture_weight_decay)
    enc_train = encode_split(data_dir, train.task, "train", tokenizer, backbone.max_length, cache_dir, train.subsample.train, seed)
    enc_dev = encode_split(data_dir, train.task, "dev", tokenizer, backbone.max_length, cache_dir, train.subsample.dev, seed)
    pad = tokenizer.pad_token_id or 0
    n = len(enc_train["labels"])
    steps_per_epoch = (n // 2 + train.batch_size - 1) // train.batch_size
    total = steps_per_epoch * leco.search_epochs
    scheduler = linear_schedule(weight_optimizer, int(train.warmup_ratio * total), total)

    resume_path = out_dir / "_resume" / "state.pt"
    history, trajectory, global_step, start = [], [], 0, 1
    if resume_path.exists():
        saved = torch.load(resume_path, weights_only=False)
        model.load_state_dict(saved["model"])
        weight_optimizer.load_state_dict(saved["weight_optimizer"])
        architecture_optimizer.load_state_dict(saved["architecture_optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        history, trajectory, global_step, start = saved["history"], saved["trajectory"], saved["global_step"], saved["epoch"] + 1
        tqdm.write(f"[leco search] resuming {train.task} from {resume_path.parent}: epoch {saved['epoch']}/{leco.search_epochs} finished earlier")

    for epoch in range(start, leco.search_epochs + 1):
        d1, d2 = split_halves(n, seed * 1000 + epoch)
        shuffle = np.random.default_rng(seed * 1000 + epoch + 500)
        d1_batches = batches(enc_train, train.batch_size, pad, device=dev_, order=shuffle.permutation(d1).tolist())
        d2_batches = batches(enc_train, train.batch_size, pad, device=dev_, order=shuffle.permutation(d2).tolist())
        bar = tqdm(d1_batches, total=steps_per_epoch, disable=None, leave=False,
                   desc=f"leco search epoch {epoch}/{leco.search_epochs}")
        global_step, d1_loss, d2_loss = search_epoch(model, bar, d2_batches, weight_optimizer, architecture_optimizer,
                                                     scheduler, train.max_grad_norm, global_step=global_step)
        weights = model.heads.architecture_weights()
        trajectory.append(weights)
        rec = record_exits(model, batches(enc_dev, 64, pad, device=dev_)).cpu()
        scores = layerwise_scores(spec["metric"], rec.logits, rec.labels, spec["label_type"] == "float")
        history.append({"epoch": epoch, "step": global_step, "d1_loss": d1_loss, "d2_loss": d2_loss,
                        "dev_layer_scores": scores, "dev_mean_score": float(np.mean(scores)),
                        "derived": derive_architecture(weights)})
        tqdm.write(f"[leco search] epoch {epoch}: D1 loss {d1_loss:.4f}, D2 loss {d2_loss:.4f}, "
                   f"dev mean layer score {np.mean(scores):.2f}")
        logger.log_metrics({"search_d1_loss": d1_loss, "search_d2_loss": d2_loss, "search_dev_mean_layer_score": float(np.mean(scores)),
                            **{f"alpha_layer_{k}_{choice}_{op}": w for k, layer in enumerate(weights, 1)
                               for choice, ops in layer.items() for op, w in ops.items()}}, step=epoch)
        atomic_torch_save(resume_path, {"model": model.state_dict(), "weight_optimizer": weight_optimizer.state_dict(),
                                        "architecture_optimizer": architecture_optimizer.state_dict(),
                                        "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                        "history": history, "trajectory": trajectory, "global_step": global_step, "epoch": epoch})
    weights_path = atomic_write_json(out_dir / "architecture_weights.json", {
        "task": train.task, "seed": seed, "search_space": leco.search_space, "inner_size": leco.inner_size,
        "epochs": trajectory})
    atomic_write_json(out_dir / "history.json", history)
    plot = architecture_heatmap(trajectory, f"{train.task}: LECO architecture weights per epoch", out_dir / "architecture_weights.png")
    result = write_result(out_dir, {"architecture_weights": weights_path, "plot": plot, "history": out_dir / "history.json",
                                    "train_rows": n, "epochs": leco.search_epochs})
    shutil.rmtree(out_dir / "_resume", ignore_errors=True)
    return result


def architecture_table(architecture: list[dict[str, str]], weights: list[dict[str, dict[str, float]]] | None = None) -> str:
    """The paper's Table 6 shape: one row per layer; with ``weights``, each op's final weight
    beside it (uniform is 1/6 for activations, 1/8 for encoder ops, 1/4 for pooling)."""
    head = ["layer", "activation 1", "activation 2", "pooler", "encoder op 1", "encoder op 2"]
    keys = ["activation_1", "activation_2", "pooling", *ENCODER_SLOTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, cell in enumerate(architecture, 1):
        shown = [cell[key] if weights is None else f"{cell[key]} ({weights[k - 1][key][cell[key]]:.3f})" for key in keys]
        lines.append("| " + " | ".join([str(k), *shown]) + " |")
    return "\n".join(lines) + "\n"


@task(name="derive_exits", cache_policy=ARTIFACT_CACHE, persist_result=True)
def derive_exits(architecture_weights: Path, out_dir: Path) -> dict:
    """Discretise the last search epoch (argmax per choice, ``null`` included) ->
    ``architecture.json`` and ``architecture.md``."""
    out_dir = Path(out_dir)
    searched = json.loads(Path(architecture_weights).read_text())
    architecture = derive_architecture(searched["epochs"][-1])
    path = atomic_write_json(out_dir / ARCHITECTURE_FILE, {"task": searched["task"], "seed": searched["seed"],
                                                           "inner_size": searched["inner_size"], "layers": architecture})
    table = architecture_table(architecture, searched["epochs"][-1])
    atomic_write_text(out_dir / "architecture.md", table)
    return write_result(out_dir, {"architecture": path, "table": table, "layers": architecture})


def load_architecture(path: Path, num_layers: int | None = None) -> list[dict[str, str]]:
    """Read and check a derived-architecture file: one cell per layer (``num_layers`` when given),
    every choice one known op. Errors name the file, the layer and the key."""
    path = Path(path)
    if not path.exists():
        raise MissingCheckpointError(f"{path}: no derived LECO architecture; run `exitflow leco` (search, derive) first")
    try:
        layers = json.loads(path.read_text())["layers"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a derived LECO architecture (expected JSON with a 'layers' list): {err}") from None
    cells = check_architecture(layers, num_layers if num_layers is not None else len(layers), str(path))
    for k, cell in enumerate(cells, 1):
        several = [key for key, ops in cell.items() if len(ops) != 1]
        if several:
            raise CheckpointError(f"{path}, layer {k}: {', '.join(several)} name several ops; a derived cell names one op per "
                                  f"choice ({', '.join(SEARCH_SPACE)})")
    return [{key: ops[0] for key, ops in cell.items()} for cell in cells]


def check_checkpoint_architecture(ckpt_dir: Path, architecture_file: Path) -> None:
    """Fail unless the checkpoint's exits were built from ``architecture_file``; the message
    names both files and the first layer and choice that differ."""
    meta_path = Path(ckpt_dir) / "exitflow.json"
    if not meta_path.exists():
        raise MissingCheckpointError(f"{meta_path}: no exitflow checkpoint; run `exitflow leco` first")
    exits = json.loads(meta_path.read_text()).get("exits", {})
    expected = load_architecture(architecture_file)
    held = exits.get("head_options", {}).get("architecture")
    if exits.get("head") != "leco" or not isinstance(held, list):
        raise CheckpointError(f"{meta_path}: exits are {exits.get('head')!r}, not LECO exits from {architecture_file}")
    if len(held) != len(expected):
        raise CheckpointError(f"{meta_path}: {len(held)} exits, but {architecture_file} describes {len(expected)} layers")
    for k, (have, want) in enumerate(zip(held, expected), 1):
        for key in SEARCH_SPACE:
            if have.get(key) != want[key]:
                raise CheckpointError(f"{meta_path}: layer {k} {key} is {have.get(key)!r} but {architecture_file} says "
                                      f"{want[key]!r}; retrain the exits (`exitflow leco`) after changing the architecture")
