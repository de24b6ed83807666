"""Where each step's artifacts live (also the ``dvc.yaml`` outs), and the data step every flow starts with::

    artifacts/train/<strategy>/   artifacts/evaluate/<strategy>/   artifacts/report/
    artifacts/hashee/<tag>/{table,train,evaluate}/   (tag: ``default`` in the pipeline, the config name in the study)
    artifacts/consistentee/init/   (weighted init with policy networks; shared by every ConsistentEE run)
    artifacts/consistentee/<tag>/rounds/round-<r>/{memorized,train}/   artifacts/consistentee/<tag>/{hardness,evaluate,report}/
"""

from __future__ import annotations

from pathlib import Path

from tasks.config import Params
from tasks.data import prepare_data


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


def consistentee_dirs(params: Params, tag: str, rounds: int) -> dict[str, Path]:
    base = params.path(params.artifacts_dir) / "consistentee"
    dirs = {"init": base / "init", "hardness": base / tag / "hardness", "evaluate": base / tag / "evaluate",
            "report": base / tag / "report"}
    for r in range(1, rounds + 1):
        dirs[f"memorized-{r}"] = base / tag / "rounds" / f"round-{r}" / "memorized"
        dirs[f"round-{r}"] = base / tag / "rounds" / f"round-{r}" / "train"
    return dirs


def common(params: Params, dirs: dict[str, Path]) -> dict:
    return {"data_dir": dirs["data"], "cache_dir": dirs["cache"], "seed": params.seed, "device": params.device}


def prepare_task_data(params: Params) -> dict:
    """The data step every flow starts with: validated Parquet splits under ``data.out_dir``."""
    return prepare_data(params.data, params.path(params.data.source_dir), stage_dirs(params)["data"], params.seed)
