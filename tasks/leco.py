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

import shutil
from functools import partial
from pathlib import Path

import numpy as np
from prefect import task
from tqdm.auto import tqdm

from models.errors import CheckpointError, MissingCheckpointError
from models.exiting import MultiExitModel
from models.leco import ENCODER_SLOTS, SEARCH_SPACE, check_architecture, derive_architecture
from models.leco_search import SearchConfig, search_architecture, search_orders
from tasks.backbones import load_backbone, pick_device
from tasks.caching import ARTIFACT_CACHE
from tasks.checkpoint_files import read_json, read_torch
from config.params import BackboneConfig, LecoConfig, TrainConfig
from tasks.data import load_meta
from tasks.features import batches, encode_split
from tasks.io import atomic_torch_save, atomic_write_json, atomic_write_text, write_result
from tasks.plots import architecture_heatmap
from tasks.metric_logger import MetricLogger, NullLogger
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
    torch_device = pick_device(device)
    spec = load_meta(data_dir, train.task)["spec"]
    seed_everything(seed)
    backbone_model, tokenizer = load_backbone(backbone.name, backbone.attn_implementation)
    searched = train.model_copy(update={"head": "leco", "head_options": leco.exits(), "exit_scorer": None})
    model = MultiExitModel(backbone_model, exit_config(searched, spec)).to(torch_device)
    enc_train = encode_split(data_dir, train.task, "train", tokenizer, backbone.max_length, cache_dir, train.subsample.train, seed)
    enc_dev = encode_split(data_dir, train.task, "dev", tokenizer, backbone.max_length, cache_dir, train.subsample.dev, seed)
    model.start_regression_at(enc_train["labels"])
    pad = tokenizer.pad_token_id or 0
    n = len(enc_train["labels"])
    cfg = SearchConfig(epochs=leco.search_epochs, steps_per_epoch=(n // 2 + train.batch_size - 1) // train.batch_size,
                       lr=train.lr, weight_decay=train.weight_decay, warmup_ratio=train.warmup_ratio,
                       max_grad_norm=train.max_grad_norm, architecture_lr=leco.architecture_lr,
                       architecture_weight_decay=leco.architecture_weight_decay)
    resume_path = out_dir / "_resume" / "state.pt"
    search = search_architecture(model, cfg, partial(search_batches, enc_train, cfg, train.batch_size, pad, seed, torch_device),
                                 partial(batches, enc_dev, 64, pad, device=torch_device), spec["metric"],
                                 resume=load_search_state(resume_path, train.task, leco.search_epochs),
                                 on_epoch=partial(report_search_epoch, logger, resume_path))
    weights_path = atomic_write_json(out_dir / "architecture_weights.json", {
        "task": train.task, "seed": seed, "search_space": leco.search_space, "inner_size": leco.inner_size,
        "epochs": search.trajectory})
    atomic_write_json(out_dir / "history.json", search.history)
    plot = architecture_heatmap(search.trajectory, f"{train.task}: LECO architecture weights per epoch",
                                out_dir / "architecture_weights.png")
    result = write_result(out_dir, {"architecture_weights": weights_path, "plot": plot, "history": out_dir / "history.json",
                                    "train_rows": n, "epochs": leco.search_epochs})
    shutil.rmtree(out_dir / "_resume", ignore_errors=True)
    return result


def search_batches(enc: dict, cfg: SearchConfig, batch_size: int, pad: int, seed: int, device, epoch: int):
    """One search epoch's ``(D1 batches with a progress bar, D2 batches)`` (``search_orders``)."""
    d1, d2 = search_orders(len(enc["labels"]), seed, epoch)
    d1_batches = batches(enc, batch_size, pad, device=device, order=d1)
    d2_batches = batches(enc, batch_size, pad, device=device, order=d2)
    return (tqdm(d1_batches, total=cfg.steps_per_epoch, disable=None, leave=False, desc=f"leco search epoch {epoch}/{cfg.epochs}"),
            d2_batches)


def load_search_state(resume_path: Path, task_name: str, epochs: int) -> dict | None:
    """The last finished search epoch's state in ``resume_path`` (None without one), said aloud."""
    if not resume_path.exists():
        return None
    saved = read_torch(resume_path)
    tqdm.write(f"[leco search] resuming {task_name} from {resume_path.parent}: epoch {saved['epoch']}/{epochs} finished earlier")
    return saved


def report_search_epoch(logger: MetricLogger, resume_path: Path, record: dict, weights: list, state: dict) -> None:
    """After each search epoch: the progress line, the metrics (every alpha), the resume state."""
    epoch, scores = record["epoch"], record["dev_layer_scores"]
    tqdm.write(f"[leco search] epoch {epoch}: D1 loss {record['d1_loss']:.4f}, D2 loss {record['d2_loss']:.4f}, "
               f"dev mean layer score {np.mean(scores):.2f}")
    logger.log_metrics({"search_d1_loss": record["d1_loss"], "search_d2_loss": record["d2_loss"],
                        "search_dev_mean_layer_score": float(np.mean(scores)),
                        **{f"alpha_layer_{k}_{choice}_{op}": w for k, layer in enumerate(weights, 1)
                           for choice, ops in layer.items() for op, w in ops.items()}}, step=epoch)
    atomic_torch_save(resume_path, state)


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
    searched = read_json(architecture_weights)
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
        layers = read_json(path)["layers"]
    except (KeyError, TypeError) as err:
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
    exits = read_json(meta_path).get("exits", {})
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
