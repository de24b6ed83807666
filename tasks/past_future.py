"""Global Past-Future checkpoints: which setting a checkpoint was trained as (``check_setting``).

The comparison of the settings is ``tasks.reports.past_future``.
"""

from __future__ import annotations

from pathlib import Path

from models.errors import CheckpointError, MissingCheckpointError
from config.params import setting_name
from tasks.checkpoint_files import read_json

LOCAL_PREFIX = "local-"


def check_setting(ckpt_dir: Path, setting: str) -> None:
    """Fail unless the checkpoint in ``ckpt_dir`` was trained as ``setting`` (``concat-future``,
    ``vote``, ``local-weighted``, ...); the message names the file and what it holds."""
    meta_path = Path(ckpt_dir) / "exitflow.json"
    if not meta_path.exists():
        raise MissingCheckpointError(f"{meta_path}: no exitflow checkpoint for setting {setting!r}; run `exitflow past-future` first")
    meta = read_json(meta_path)
    exits = meta.get("exits", {})
    if exits.get("head") == "past_future":
        options = exits.get("head_options", {})
        held = setting_name(options.get("past"), bool(options.get("future")))
    else:
        held = f"{LOCAL_PREFIX}{meta.get('strategy')}"
    if held != setting:
        raise CheckpointError(f"{meta_path}: this checkpoint was trained as {held!r} (exits.head={exits.get('head')!r}, "
                              f"head_options={exits.get('head_options', {})}), not as {setting!r}")
