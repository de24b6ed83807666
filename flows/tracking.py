"""MLflow at flow level only: parent run per pipeline run, nested runs per strategy/criterion."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow

from config.params import Params
from tasks.io import atomic_write_text
from tasks.metric_logger import server_gone, tracking_unreachable

REPO_ROOT = Path(__file__).resolve().parent.parent


def tracking_uri(params: Params) -> str:
    """``MLFLOW_TRACKING_URI`` wins; a relative ``sqlite:///`` path resolves against the repo root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.mlflow.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(params.path(uri[len(prefix):]))
    return uri


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """An ``http(s)://`` tracking URI must answer its ``/health`` endpoint within ``timeout_s``;
    otherwise fail naming the URI (MLflow itself retries for minutes before giving up)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    from config.params import ConfigError

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError) as err:
        raise ConfigError(f"MLflow tracking server {uri} did not answer ({getattr(err, 'reason', err)}); start it "
                          "(`mlflow server ...`) or point mlflow.tracking_uri / MLFLOW_TRACKING_URI elsewhere") from None


# MLflow's defaults retry a request for minutes (7 retries, backoff factor 2, 120 s timeout): a
# server that went away would hang the run that long; these give up on a request after about 3 s of retries (env wins)
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def use_experiment(params: Params, name: str) -> str:
    """Point MLflow at the configured store and experiment (artifacts beside a SQLite store)."""
    uri = tracking_uri(params)
    check_tracking_server(uri)
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_RETRIES.items():
            os.environ.setdefault(key, value)
        close_unfinished_runs(params.root, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # else the registry keeps the first tracking URI this process used
    if mlflow.get_experiment_by_name(name) is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        mlflow.create_experiment(name, artifact_location=location)
    return mlflow.set_experiment(name).experiment_id


def git_sha(root: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


UNFINISHED_RUNS = ".exitflow-unfinished-runs"  # in the project root: "<tracking URI> <run id>" lines


def close_unfinished_runs(root: Path, uri: str) -> None:
    """Mark FAILED the runs (and their nested runs) left RUNNING on ``uri`` when it stopped
    answering during an earlier command of this project, now that it answers again."""
    path = Path(root) / UNFINISHED_RUNS
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    client = mlflow.MlflowClient(tracking_uri=uri)
    for run_id in [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == uri]:
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:  # not on this server (its store was replaced)
            continue
        nested = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        for unfinished in [run, *nested]:
            if unfinished.info.status == "RUNNING":
                client.set_terminated(unfinished.info.run_id, "FAILED")
        print(f"MLflow run {run_id} on {uri}, left running when the server went away, is now marked FAILED",
              file=sys.stderr, flush=True)
    rest = [line for line in lines if line.split(" ", 1)[0] != uri]
    if rest:
        atomic_write_text(path, "".join(f"{line}\n" for line in rest))
    else:
        path.unlink()


@contextlib.contextmanager
def parent_run(params: Params, run_name: str, sections: tuple[str, ...]):
    """Open the flow's parent run; log the params sections, git SHA and DVC input hashes. A tracking
    server that stops answering inside ends the command with ``TrackingServerGone`` (exit 3)."""
    run = mlflow.start_run(run_name=run_name)
    try:
        dump = params.model_dump(mode="json")
        mlflow.log_params({k: v[:500] for k, v in flatten({s: dump[s] for s in sections}).items()})
        mlflow.set_tags({"git_sha": git_sha(params.root), "params_root": str(params.root)})
        lock = params.root / "data.dvc"
        if lock.exists():
            mlflow.log_text(lock.read_text(), "dvc/data.dvc")
        yield run
        mlflow.end_run("FINISHED")
    except BaseException as err:
        try:
            mlflow.end_run("FAILED")  # leaves the active-run stack even when the server is gone
        except Exception:
            if not tracking_unreachable(err):
                raise
        if tracking_unreachable(err):
            with open(params.root / UNFINISHED_RUNS, "a") as f:  # closed by the next command that reaches the server
                f.write(f"{mlflow.get_tracking_uri()} {run.info.run_id}\n")
            raise server_gone() from None
        raise


@contextlib.contextmanager
def nested_run(name: str):
    """A nested MLflow run when one is active (yields True), else nothing (yields False): the
    comparison's cells run a method's steps outside MLflow, its own flow inside its run."""
    if mlflow.active_run() is None:
        yield False
        return
    with mlflow.start_run(run_name=name, nested=True):
        yield True


def active_logger():
    """A metric logger for the active MLflow run, or one that drops metrics when none is active."""
    from tasks.metric_logger import MlflowLogger, NullLogger

    run = mlflow.active_run()
    return NullLogger() if run is None else MlflowLogger(run.info.run_id)


def shipped_criterion(operating_points: dict[str, dict]) -> dict:
    """The criterion logged with the model: the operating point with the largest *dev* layer
    speed-up (ties: higher dev quality). Test numbers never choose. ``{}`` without criteria."""
    if not operating_points:
        return {}
    name, op = max(operating_points.items(), key=lambda kv: (kv[1]["dev"]["layer_speedup"], kv[1]["dev"]["quality"]))
    return {"criterion": name, "threshold": op["threshold"]}


def log_exit_run(params: Params, model_name: str, trained: dict, evaluated: dict, register: bool = True) -> None:
    """Inside the nested run of a multi-exit model ``model_name``: per-layer metrics, curves (nested per criterion), plots, model."""
    summary = evaluated["summary"]
    chance = summary.get("dev_chance_check")
    if chance is not None:
        mlflow.set_tag("at_chance", str(chance["at_chance"]).lower())
        mlflow.log_metrics({"dev_majority_score": chance["majority_score"], "dev_chance_loss": chance["chance_loss"],
                            "dev_full_loss": chance["loss"]})
    for k, (dev, test) in enumerate(zip(summary["layerwise"]["dev"], summary["layerwise"]["test"]), start=1):
        mlflow.log_metrics({"layerwise_dev": dev, "layerwise_test": test}, step=k)
    mlflow.log_artifact(evaluated["plot"], "plots")
    mlflow.log_artifact(evaluated["layerwise_plot"], "plots")
    mlflow.log_artifact(evaluated["metrics"], "evaluation")
    curves = json.loads(Path(evaluated["curves"]).read_text())
    for criterion, points in curves.items():
        with mlflow.start_run(run_name=f"{model_name}/{criterion}", nested=True):
            mlflow.log_param("criterion", criterion)
            op = summary["operating_points"][criterion]
            mlflow.log_params({"operating_threshold": op["threshold"]})
            mlflow.log_metrics({f"operating_{k}": v for k, v in op["test"].items()})
            for i, p in enumerate(points):
                mlflow.log_metrics({f"curve_test_{k}": v for k, v in p["test"].items()}, step=i)
                mlflow.log_metrics({f"curve_dev_{k}": v for k, v in p["dev"].items()}, step=i)
    model_config = {"max_length": params.backbone.max_length, **shipped_criterion(summary["operating_points"])}
    log_exit_model(trained["checkpoint"], model_config, params.mlflow.registered_model if register else None)


def log_exit_model(checkpoint, model_config: dict, registered_model_name: str | None = None):
    """Log a checkpoint as the ``model`` of the active run (an MLflow pyfunc over the
    ``save_pretrained``-style folder, our code shipped with it), registered when named;
    returns MLflow's ``ModelInfo``."""
    from tasks.mlflow_model import MultiExitPyfunc

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=MultiExitPyfunc(),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(REPO_ROOT / "models"), str(REPO_ROOT / "tasks"), str(REPO_ROOT / "config")],
        model_config=model_config,
        pip_requirements=["torch==2.13.0", "transformers", "safetensors", "pandas", "pyyaml", "pydantic", "prefect"],
        registered_model_name=registered_model_name,
    )
