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
from pathlib import Path

import mlflow

from flows.tracking import log_exit_model, shipped_criterion
from config.params import Params
from tasks.metric_schema import front_readings
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
                mlflow.log_metric(f"lr_{lr}_full_depth_dev_quality", score)
        if cell.ok:
            mlflow.log_metrics({"full_depth_dev_quality": cell.summary.full_dev,
                                "full_depth_test_quality": cell.summary.full_test, **front_readings(cell.points)})
            for name, point in cell.summary.timed.items():
                mlflow.log_metrics({f"{name}_test_quality": point.test_quality, f"{name}_layer_speedup": point.layer_speedup,
                                    f"{name}_wallclock_speedup": point.wallclock_speedup})
        mlflow.log_dict(cell.to_json(), "cell.json")


def holder_dev_score(client, name: str, alias: str):
    """``(version holding alias, its dev_score tag)``; ``(None, -inf)`` when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code not in NO_CHAMPION:
            raise  # a registry that does not answer must not move the alias
        return None, float("-inf")
    return current, float(current.tags.get("dev_score", "-inf"))


def challenge(client, name: str, alias: str, version: str, dev_score: float) -> bool:
    """The one alias rule (``champion`` here, ``recommended`` in the default run): ``version``
    takes ``alias`` when its dev score (full-depth dev quality) beats the holder's ``dev_score``
    tag, or nothing holds it. Test numbers never choose. Returns whether the alias moved."""
    current, best = holder_dev_score(client, name, alias)
    if current is not None and dev_score <= best:
        return False
    client.set_registered_model_alias(name, alias, version)
    return True


def update_champion(params: Params, profile: str, cell: ComparisonCell) -> dict:
    """Register ``cell``'s model under ``model_name`` with the champion alias when its dev score
    beats the current champion's (or there is none). Returns what happened."""
    from mlflow import MlflowClient

    from flows.tracking import describe_version, model_input_example

    client, alias = MlflowClient(), params.compare.champion_alias
    name = model_name(profile, cell.task, cell.method)
    current, best = holder_dev_score(client, name, alias)
    if cell.dev_score <= best:
        return {"model": name, "moved": False, "version": current.version, "dev_score": best}
    if not Path(cell.summary.checkpoint).exists():  # a unit served from a record made on another machine
        print(f"[compare] champion of {cell.task}/{cell.method} not challenged: seed {cell.seed}'s checkpoint "
              f"{cell.summary.checkpoint} is not on this machine (its unit was served from its record)")
        return {"model": name, "moved": False, "version": getattr(current, "version", None), "dev_score": best,
                "skipped": "checkpoint not on this machine"}
    operating = {n: {"threshold": p.threshold, "dev": {"layer_speedup": p.dev_layer_speedup, "quality": p.dev_quality}}
                 for n, p in cell.summary.timed.items() if p.dev_layer_speedup is not None}
    shipped = shipped_criterion(operating)
    with mlflow.start_run(run_name=f"champion/{cell.task}/{cell.method}", nested=True):
        mlflow.log_params({"method": cell.method, "task": cell.task, "seed": cell.seed})
        info = log_exit_model(cell.summary.checkpoint, {"max_length": params.backbone.max_length, **shipped},
                              name, name=f"champion-{cell.task}-{cell.method}",
                              input_example=model_input_example(params, cell.task))
    chosen = shipped or ({"criterion": next(iter(cell.summary.timed))} if len(cell.summary.timed) == 1 else {})
    point = cell.summary.timed.get(chosen.get("criterion"))  # a one-point method (HashEE): its only point
    measured = {} if point is None else {"dev_quality": point.dev_quality, "test_quality": point.test_quality,
                                         "layer_speedup": point.layer_speedup}
    describe_version(info, name, {"method": cell.method, "task": cell.task, "seed": cell.seed, "lr": cell.lr}, chosen, {},
                     {k: v for k, v in measured.items() if v is not None}, cell.dev_score, params, alias=alias,
                     rule=(f"Comparison `{profile}`: the best seed of {cell.method} on {cell.task} by full-depth dev "
                           f"quality (seed {cell.seed}, lr {cell.lr}); "
                           + (f"ships criterion {shipped['criterion']} at threshold {shipped['threshold']}, the "
                              "dev-chosen point with the largest dev layer speed-up." if shipped else
                              "its exits are fixed by the method (no threshold to choose).")))
    return {"model": name, "moved": True, "version": info.registered_model_version, "dev_score": cell.dev_score}


def champions(params: Params, profile: str, cells: list[ComparisonCell]) -> list[dict]:
    """Per (task, method) of early-exit cells that ran: the best seed on dev challenges the champion."""
    best: dict[tuple, ComparisonCell] = {}
    for c in cells:
        if c.ok and not c.is_static:
            key = (c.task, c.method)
            if key not in best or c.dev_score > best[key].dev_score:
                best[key] = c
    return [update_champion(params, profile, c) for c in best.values()]
