"""Where each step's artifacts live (also the ``dvc.yaml`` outs)::

    artifacts/train/<strategy>/   artifacts/evaluate/<strategy>/   artifacts/report/
    artifacts/hashee/<tag>/{table,train,evaluate}/   (tag: ``default`` in the pipeline, the config name in the study)
"""

from __future__ import annotations

from pathlib import Path

from tasks.config import Params


def stage_dirs(params: Params, strategy: str | None = None) -> dict[str, Path]:
    art = params.path(params.artifacts_dir)
    dirs = {"data": params.path(params.data.out_dir), "cache": art / "cache" / "tokens", "report": art / "report"}
    if strategy is not None:
        dirs.update(train=art / "train" / strategy, evaluate=art / "evaluate" / strategy)
    return dirs


def hashee_dirs(params: Params, tag: str) -> dict[str, Path]:
    base = params.path(params.artifacts_dir) / "hashee" / tag
    return {"table": base / "table", "train": base / "train", "evaluate": base / "evaluate",
            "full": stage_dirs(params, "single")["train"]}


def common(params: Params, dirs: dict[str, Path]) -> dict:
    return {"data_dir": dirs["data"], "cache_dir": dirs["cache"], "seed": params.seed, "device": params.device}
