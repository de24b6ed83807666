"""Reading saved artifacts back: a damaged or truncated file is a ``CheckpointError`` naming it.

A checkpoint overwritten with garbage or cut short (a copy that stopped, a full disk outside our
atomic writes) used to surface as the parser's own error (``SafetensorError: Error while
deserializing header: incomplete metadata``), without the file's name, as a bug with a
traceback. Every load of a checkpoint, weights or architecture file goes through these readers,
and ``check_files`` reads the headers of a whole checkpoint folder before ``from_pretrained``
does, so the message names the one damaged file and what to do.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from models.errors import CheckpointError, MissingCheckpointError

REMEDY = "delete it and re-run the command (the step that writes it runs again)"


def damaged(path: Path, reason: Any) -> CheckpointError:
    """The error for a file that exists but cannot be read back."""
    reason = " ".join(str(reason).split()).split(". ")[0] or type(reason).__name__  # the first sentence
    return CheckpointError(f"{path} is damaged or incomplete ({reason}); {REMEDY}")


def _present(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"{path} is missing; re-run the step that writes it")
    return path


def read_json(path: Path) -> Any:
    """The JSON document in ``path``."""
    path = _present(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise damaged(path, err) from None


def read_safetensors(path: Path) -> dict:
    """The tensors in the safetensors file ``path``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _present(path)
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise damaged(path, err) from None


def read_torch(path: Path, **kwargs) -> Any:
    """``torch.load(path, weights_only=False, **kwargs)`` (files this project wrote; ``kwargs`` win)."""
    import torch

    path = _present(path)
    try:
        return torch.load(path, **{"weights_only": False, **kwargs})
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError) as err:
        # a torch zip cut short: RuntimeError "PytorchStreamReader failed reading zip archive"
        if isinstance(err, RuntimeError) and "PytorchStreamReader" not in str(err):
            raise
        raise damaged(path, err) from None


def check_safetensors_header(path: Path) -> None:
    """Read ``path``'s header (names, shapes, the byte ranges it claims) without its tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except SafetensorError as err:
        raise damaged(path, err) from None


def check_files(folder: Path) -> None:
    """Parse every ``.json`` file and every ``.safetensors`` header below ``folder`` (a checkpoint,
    a ``save_pretrained`` backbone), so that a damaged one is named before a loader trips on it."""
    for path in sorted(Path(folder).rglob("*")):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            read_json(path)
        elif path.suffix == ".safetensors":
            check_safetensors_header(path)
