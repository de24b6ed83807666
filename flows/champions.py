"""MLflow for ``exitflow compare`` (``flows.compare``): a nested run per cell and the champion
alias per (task, method).

**Tracking.** MLflow runs are written by the flow only (never by units): experiment
``exitflow-compare``, a parent run per comparison with a nested run per cell. Per
(task, method), the best seed's model is registered as ``exitflow-<profile>-<task>-<method>``
and given the alias ``compare.champion_alias`` when its dev score beats the alias holder's
(model version tag ``dev_score``); otherwise nothing is logged for it.
"""

from __future__ import annotations

import re

import mlflow

from flows.tracking import log_exit_model, shipped_criterion
from config.params import Params
from tasks.reports.cells import ComparisonCell

NO_CHAMPION = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}  # no such model, or no such alias on it


def model_name(profile: str, task_name: str, method: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"exitflow-{profile}-{task_name}-{method}")


def log_cell(cell: ComparisonCell) -> None:
    """The nested run of one cell: its choice, scores, curves (``cell.json``) and time."""
    with mlflow.start_run(run_name=f"{cell.task}/{cell.method}/seed-{cell.seed}", nested=True):
        mlflow.log_params({"task": cell.task, "method": cell.method, "seed": cell.seed, "kind": cell.kind,
                           "status": cell.status, "lr": cell.lr})
        mlflow.set_tag("status", cell.status)
        if cell.error:
            mlflow.set_tag("error", cell.error[:4000])
        mlflow.log_metric("seconds", cell.seconds)
        for lr, score in cell.lr_scores.items():
            if score is not None:
                mlflow.log_metric(f"lr_{lr}_dev_full_quality", score)
        if cell.ok:
            mlflow.log_metrics({"dev_full_quality": cell.summary.full_dev, "test_full_quality": cell.summary.full_test})
            for name, point in cell.summary.timed.items():
                mlflow.log_metrics({f"{name}_test_quality": point.test_quality, f"{name}_layer_speedup": point.layer_speedup,
                                    f"{name}_wallclock_speedup": point.wallclock_speedup})
        mlflow.log_dict(cell.to_json(), "cell.json")


def update_champion(params: Params, profile: str, cell: ComparisonCell) -> dict:
    """Register ``cell``'s model under ``model_name`` with the champion alias when its dev score
    beats the current champion's (or there is none). Returns what happened."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client, alias = MlflowClient(), params.compare.champion_alias
    name = model_name(profile, cell.task, cell.method)
    try:
        current = client.get_model_version_by_alias(name, alias)
        best = float(current.tags.get("dev_score", "-inf"))
    except MlflowException as err:
        if err.error_code not in NO_CHAMPION:
            raise  # a registry that does not answer must not move the alias
        current, best = None, float("-inf")
    if cell.dev_score <= best:
        return {"model": name, "moved": False, "version": current.version, "dev_score": best}
    operating = {n: {"threshold": p.threshold, "dev": {"layer_speedup": p.dev_layer_speedup, "quality": p.dev_quality}}
                 for n, p in cell.summary.timed.items() if p.dev_layer_speedup is not None}
    with mlflow.start_run(run_name=f"champion/{cell.task}/{cell.method}", nested=True):
        info = log_exit_model(cell.summary.checkpoint, {"max_length": params.backbone.max_length,
                                                        **shipped_criterion(operating)}, name)
    version = info.registered_model_version
    for key in ("dev_score", "task", "method", "seed", "lr"):
        client.set_model_version_tag(name, version, key, str(getattr(cell, key)))
    client.set_registered_model_alias(name, alias, version)
    return {"model": name, "moved": True, "version": version, "dev_score": cell.dev_score}


def champions(params: Params, profile: str, cells: list[ComparisonCell]) -> list[dict]:
    """Per (task, method) of early-exit cells that ran: the best seed on dev challenges the champion."""
    best: dict[tuple, ComparisonCell] = {}
    for c in cells:
        if c.ok and not c.is_static:
            key = (c.task, c.method)
            if key not in best or c.dev_score > best[key].dev_score:
                best[key] = c
    return [update_champion(params, profile, c) for c in best.values()]
