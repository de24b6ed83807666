"""MLflow at flow level only: parent run per pipeline run, nested runs per strategy/criterion."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import yaml

from config.params import Params
from tasks.io import atomic_write_text, file_hash, process_alive
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
    close_orphaned_runs(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # else the registry keeps the first tracking URI this process used
    if mlflow.get_experiment_by_name(name) is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        mlflow.create_experiment(name, artifact_location=location)
    experiment = mlflow.set_experiment(name)
    from tasks.metric_schema import NOTE

    client = mlflow.MlflowClient()
    if NOTE not in experiment.tags:  # a description the user edited in the UI is kept
        client.set_experiment_tag(experiment.experiment_id, NOTE, experiment_description(name))
    if "mlflow.experimentKind" not in experiment.tags:  # the UI opens on runs, not on GenAI traces
        client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", "custom_model_development")
    return experiment.experiment_id


def experiment_description(name: str) -> str:
    """What the experiment holds and where a reviewer clicks first (MLflow 3.17 opens on Traces)."""
    return (f"exitflow experiment `{name}`. Open the **Runs** tab (if MLflow opens on the GenAI traces page, it is "
            "empty here; runs without a logged model may be listed under *Evaluations*). Each flow run is a parent run: "
            "its overview has the headline `best_test_quality_at_2x` and the artifact `leaderboard.json` (test quality "
            "at 1.5x/2x/3x per method and criterion). Sort the runs table by `metrics.test_quality_at_2x` to compare "
            "methods; chart `curve_test_quality` against Step (= layer speed-up x 100) for the trade-off plot. "
            "Keys: docs/reference/metrics.md; guide: docs/reviewing.md.")


def git_sha(root: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def git_dirty(root: Path) -> str:
    """``"true"`` when the work tree at ``root`` has uncommitted changes to tracked files, ``"unknown"`` outside git."""
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True)
    return ("true" if proc.stdout.strip() else "false") if proc.returncode == 0 else "unknown"


def entry_point() -> str:
    """The command's entry script for MLflow's ``mlflow.source.name``, without a machine path:
    relative to the repository when inside it (``flows/cli.py``), else its last two path parts."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path("python")
    try:
        return script.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return "/".join(script.parts[-2:])


def provenance_tags(root: Path) -> dict[str, str]:
    """Tags every run carries: the git commit (MLflow's own key) and dirty flag of exitflow's code,
    DVC's hash of ``data/`` (the project ``root``'s ``data.dvc``) and the md5 of its ``dvc.lock``
    (when the project has them)."""
    from tasks.metric_schema import GIT_COMMIT

    tags = {GIT_COMMIT: git_sha(REPO_ROOT), "git_dirty": git_dirty(REPO_ROOT),  # the code that ran
            "mlflow.source.name": entry_point()}
    data_dvc = root / "data.dvc"
    if data_dvc.exists():
        outs = (yaml.safe_load(data_dvc.read_text()) or {}).get("outs") or [{}]
        tags["dvc.data_md5"] = str(outs[0].get("md5", "unknown"))
    if (root / "dvc.lock").exists():
        tags["dvc.lock_md5"] = file_hash(root / "dvc.lock", "md5")
    return tags


def split_datasets(params: Params, task: str) -> list:
    """The prepared ``task``'s splits as MLflow ``DatasetInput``s (context = split), digest = DVC's
    md5 of the split's Parquet file, source = its path relative to the project; [] when ``task`` is
    not a prepared task (``-``, a learnability study, several comparison tasks)."""
    import warnings

    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag

    from flows.layout import Layout

    if task == "-" or "," in task or "/" in task:
        return []
    folder = Layout.from_params(params).data / task
    inputs = []
    for split in ("train", "dev", "test"):
        path = folder / f"{split}.parquet"
        if not path.exists():
            continue
        source = os.path.relpath(path, params.root)
        with warnings.catch_warnings():  # a relative path "can be interpreted in multiple ways": a local file
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_pandas(pd.read_parquet(path), source=source, name=f"{task}-{split}",
                                              digest=file_hash(path, "md5"))
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", split)]))
    return inputs


DVC_IGNORED = ("__pycache__", "*.pyc", "*.exitflow-lock")  # the patterns of the project's .dvcignore


def dvc_folder_md5(folder: Path) -> str:
    """DVC's content hash of a folder output, as ``dvc.lock`` records it: the md5 of the JSON list of
    ``{"md5", "relpath"}`` of its files (sorted by path, ``.dvcignore``'d names left out) + ``.dir``."""
    from fnmatch import fnmatch

    folder = Path(folder)
    entries = [{"md5": file_hash(p, "md5"), "relpath": p.relative_to(folder).as_posix()} for p in folder.rglob("*")
               if p.is_file() and not any(fnmatch(part, pattern) for part in p.relative_to(folder).parts
                                          for pattern in DVC_IGNORED)]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"  # noqa: S324 (DVC's hash)


def folder_dataset(params: Params, folder: Path, name: str, context: str):
    """A dataset folder (a learnability study's difficulty dataset) as an MLflow ``DatasetInput``:
    digest = DVC's hash of the folder (``dvc_folder_md5``), source = its path relative to the project."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # a relative path "can be interpreted in multiple ways": a local folder
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(os.path.relpath(folder, params.root))
    dataset = MetaDataset(source, name=name, digest=dvc_folder_md5(folder))
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


def describe(text: str) -> None:
    """The active run's description (``mlflow.note.content``, shown on its overview page)."""
    from tasks.metric_schema import NOTE

    mlflow.set_tag(NOTE, text)


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
OWNER_HOST, OWNER_PID = "exitflow.host", "exitflow.pid"  # tags of a parent run: the machine and process that opened it


def owner_tags() -> dict[str, str]:
    """The tags that let a later command tell that a parent run's process is gone (``close_orphaned_runs``)."""
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid())}


def owner_gone(pid: int, started_ms: int) -> bool:
    """Whether process ``pid``, which opened a run at ``started_ms`` (ms since the epoch), has ended: no such
    process, a zombie, or a new process that reuses the pid (started after the run)."""
    import psutil

    if not process_alive(pid):
        return True
    try:
        return psutil.Process(pid).create_time() * 1000 > started_ms + 1000
    except psutil.Error:
        return True


def close_orphaned_runs(uri: str) -> list[str]:
    """Mark KILLED the parent runs (and every run below them) left RUNNING on ``uri`` by a command of this
    machine that died without closing them (kill -9, power loss, out of memory); a run whose command still
    runs is left alone. Returns the closed parents' run ids."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(experiments, f"attributes.status = 'RUNNING' and tags.`{OWNER_HOST}` = "
                                              f"'{socket.gethostname()}'", max_results=1000)
    closed = []
    for run in running:
        pid = run.data.tags.get(OWNER_PID, "")
        if not pid.isdigit() or not owner_gone(int(pid), run.info.start_time):
            continue
        for unfinished in reversed(run_tree(client, run)):  # children first, the parent last
            if unfinished.info.status == "RUNNING":
                client.set_terminated(unfinished.info.run_id, "KILLED")
        print(f"MLflow run {run.info.run_name} ({run.info.run_id}), left running by process {pid} that ended "
              "without closing it, is now marked KILLED", file=sys.stderr, flush=True)
        closed.append(run.info.run_id)
    return closed


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
        for unfinished in run_tree(client, run):
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
def parent_run(params: Params, run_name: str, sections: tuple[str, ...], method: str, description: str | None = None,
               identity: dict | None = None):
    """Open the flow's parent run; log the params sections and the provenance (``provenance_tags``,
    the data snapshot's ``data.dvc``). On the way out, ``finish_run_tree`` gives every run below it
    the shared keys, provenance and datasets, and the parent its leaderboard. A tracking server
    that stops answering inside ends the command with ``TrackingServerGone`` (exit 3). The parent
    carries ``owner_tags`` so that a later command can close it if this process is killed.

    ``method``: the ``method`` param of the parent (and of runs below that name none);
    ``identity``: params overriding the parent's defaults (``task`` = ``train.task``, ``seed``).
    """
    from tasks.metric_schema import NOTE

    tags = provenance_tags(params.root) | owner_tags()
    tags[NOTE] = description or parent_description(run_name, method)
    run = mlflow.start_run(run_name=run_name, tags=tags)
    try:
        dump = params.model_dump(mode="json")
        logged = {k: v[:500] for k, v in flatten({s: dump[s] for s in sections}).items()}
        mlflow.log_params(logged)
        own = {"method": method, "task": params.train.task, "seed": params.seed, **(identity or {})}
        mlflow.log_params({k: v for k, v in own.items() if k not in logged})  # the ``seed`` section is the seed
        lock = params.root / "data.dvc"
        if lock.exists():
            mlflow.log_text(lock.read_text(), "dvc/data.dvc")
        yield run
        finish_run_tree(params, run.info.run_id)
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


def parent_description(run_name: str, method: str) -> str:
    return (f"Parent run `{run_name}` of exitflow's {method} flow. Headline: `best_test_quality_at_1.5x/2x/3x` "
            "(tag `best_run_at_<t>x` names the run); artifact `leaderboard.json` ranks every run below by test quality "
            "at 2x (dev-chosen fronts). The nested runs hold the per-model and per-criterion numbers "
            "(docs/reference/metrics.md).")


def run_tree(client, root_run) -> list:
    """``root_run`` and every run nested below it, parents before children."""
    runs, frontier = [root_run], [root_run]
    while frontier:
        frontier = [child for r in frontier for child in client.search_runs(
            [r.info.experiment_id], f"tags.mlflow.parentRunId = '{r.info.run_id}'", max_results=5000)]
        runs += frontier
    return runs


def finish_run_tree(params: Params, parent_id: str) -> None:
    """The shared part of every run below ``parent_id`` (and of the parent): provenance tags,
    identity params (``method``/``task``/``seed``/``strategy`` from the nearest run that has them,
    ``criterion`` else ``-``), the prepared splits as datasets, a description where the flow gave
    none; then the parent's leaderboard (``log_leaderboard``)."""
    from tasks.metric_schema import IDENTITY, NOT_APPLICABLE, NOTE

    client = mlflow.MlflowClient()
    runs = run_tree(client, client.get_run(parent_id))
    tags = provenance_tags(params.root)
    identity_of: dict[str, dict] = {}
    datasets: dict[str, list] = {}
    for run in runs:
        own, parent = run.data.params, identity_of.get(run.data.tags.get("mlflow.parentRunId"), {})
        identity = {k: own.get(k, parent.get(k, NOT_APPLICABLE) if k != "criterion" else NOT_APPLICABLE) for k in IDENTITY}
        identity_of[run.info.run_id] = identity
        run_id = run.info.run_id
        missing = [mlflow.entities.Param(k, str(v)) for k, v in identity.items() if k not in own]
        # the commit as the run started; DVC's hashes as the run ends (after the pipeline's data snapshot)
        new_tags = {k: v for k, v in tags.items()
                    if k not in run.data.tags or k.startswith("dvc.") or k == "mlflow.source.name"}
        if NOTE not in run.data.tags:
            new_tags[NOTE] = default_description(run.info.run_name, identity, run.data.metrics)
        client.log_batch(run_id, params=missing, tags=[mlflow.entities.RunTag(k, v) for k, v in new_tags.items()])
        if not run.inputs.dataset_inputs:  # the splits of its task ([] when it names none that was prepared)
            task = identity["task"]
            if task not in datasets:
                datasets[task] = split_datasets(params, task)
            if datasets[task]:
                client.log_inputs(run_id, datasets[task])
    log_leaderboard(client, runs)


def default_description(name: str, identity: dict, metrics: dict) -> str:
    """A run's description from its identity and what it logged (flows set better ones where they know more)."""
    what = ", ".join(f"{k} {v}" for k, v in identity.items() if v != "-")
    text = f"Run `{name}` ({what})."
    if "curve_test_quality" in metrics:
        text += (" Trade-off: chart `curve_test_quality` against Step (= test layer speed-up x 100); the sweep is "
                 "the table `curve.json`.")
    if any(k.startswith("test_quality_at_") for k in metrics):
        text += " Compare with other methods by `test_quality_at_2x` (dev-chosen front read at 2x)."
    return text


def log_leaderboard(client, runs: list) -> None:
    """On the first of ``runs`` (the parent): ``leaderboard.json``, one row per run with
    ``test_quality_at_<t>x`` (best at 2x first), and the headline ``best_test_quality_at_<t>x``
    metrics with tags ``best_run_at_<t>x`` naming the run."""
    from tasks.metric_schema import IDENTITY, TARGET_SPEEDUPS, at_key, target_label

    parent, scored = runs[0], [r for r in runs[1:] if any(at_key(t) in r.data.metrics for t in TARGET_SPEEDUPS)]
    if not scored:
        return
    order = sorted(scored, key=lambda r: -r.data.metrics.get(at_key(2.0), float("-inf")))
    columns = {"run": [r.info.run_name for r in order]}
    columns.update({k: [r.data.params.get(k, "-") for r in order] for k in IDENTITY})
    for key in [at_key(t) for t in TARGET_SPEEDUPS] + ["dev_quality", "test_quality", "layer_speedup", "flops_speedup"]:
        columns[key] = [r.data.metrics.get(key) for r in order]
    columns["run_id"] = [r.info.run_id for r in order]
    mlflow.log_table(columns, "leaderboard.json", run_id=parent.info.run_id)
    metrics, tags = {}, {}
    for t in TARGET_SPEEDUPS:
        reached = [r for r in scored if at_key(t) in r.data.metrics]
        if reached:
            best = max(reached, key=lambda r: r.data.metrics[at_key(t)])
            metrics[f"best_{at_key(t)}"] = best.data.metrics[at_key(t)]
            tags[f"best_run_at_{target_label(t)}"] = best.info.run_name
    client.log_batch(parent.info.run_id, metrics=[mlflow.entities.Metric(k, v, int(time.time() * 1000), 0) for k, v in metrics.items()],
                     tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])


def record_dvc_lock(root: Path, run_id: str) -> None:
    """Tag run ``run_id`` with the md5 of the ``dvc.lock`` the run wrote, and keep the file as an artifact."""
    lock = Path(root) / "dvc.lock"
    if lock.exists():
        client = mlflow.MlflowClient()
        client.set_tag(run_id, "dvc.lock_md5", file_hash(lock, "md5"))
        client.log_text(run_id, lock.read_text(), "dvc/dvc.lock")


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


def log_curve(points: list[dict]) -> None:
    """A criterion's sweep in the active run: ``curve.json`` (rows by test layer speed-up) and the
    step metrics ``curve_{test,dev}_quality`` whose step is that split's layer speed-up x 100, increasing."""
    from tasks.metric_schema import curve_steps, curve_table

    mlflow.log_table(curve_table(points), "curve.json")
    for split in ("test", "dev"):
        for step, quality in curve_steps(points, split):
            mlflow.log_metric(f"curve_{split}_quality", quality, step=step)


def log_exit_run(params: Params, model_name: str, trained: dict, evaluated: dict, register: bool = True,
                 method: str = "berxit") -> None:
    """Inside the nested run of a multi-exit model ``model_name`` of ``method``: identity params,
    full-depth scores, per-layer metrics, plots, a nested run per criterion (schema keys at its
    dev-chosen operating point, readings at the target speed-ups, the sweep as a curve), and the
    model (registered, described and tagged when ``register``; see ``describe_version``)."""
    from tasks.metric_schema import front_readings, operating_metrics

    summary = evaluated["summary"]
    identity = {"method": method, "strategy": summary["strategy"], "task": summary["task"], "seed": params.seed}
    mlflow.log_params(identity)
    chance = summary.get("dev_chance_check")
    if chance is not None:
        mlflow.set_tag("at_chance", str(chance["at_chance"]).lower())
        mlflow.log_metrics({"dev_majority_score": chance["majority_score"], "dev_chance_loss": chance["chance_loss"],
                            "dev_full_loss": chance["loss"]})
    full_depth = {"full_depth_dev_quality": summary["full"]["dev_quality"],
                  "full_depth_test_quality": summary["full"]["test_quality"]}
    mlflow.log_metrics(full_depth)
    for k, (dev, test) in enumerate(zip(summary["layerwise"]["dev"], summary["layerwise"]["test"]), start=1):
        mlflow.log_metrics({"layerwise_dev": dev, "layerwise_test": test}, step=k)
    mlflow.log_artifact(evaluated["plot"], "plots")
    mlflow.log_artifact(evaluated["layerwise_plot"], "plots")
    mlflow.log_artifact(evaluated["metrics"], "evaluation")
    curves = json.loads(Path(evaluated["curves"]).read_text())
    timing_path = Path(evaluated.get("timing") or "")
    timing = json.loads(timing_path.read_text()).get("operating_points", {}) if timing_path.is_file() else {}
    describe(f"{method} model `{model_name}` (objective {summary['strategy']}, task {summary['task']}, seed "
             f"{params.seed}): full-depth quality, layer-wise scores (chart `layerwise_test` against Step = layer), "
             f"trade-off plots; one nested run per exit criterion ({', '.join(curves)}) holds its operating point, "
             "`test_quality_at_<t>x` and the sweep.")
    readings = {}
    for criterion, points in curves.items():
        with mlflow.start_run(run_name=f"{model_name}/{criterion}", nested=True):
            op = summary["operating_points"][criterion]
            mlflow.log_params({**identity, "criterion": criterion, "threshold": op["threshold"]})
            readings[criterion] = front_readings(points)
            mlflow.log_metrics({**operating_metrics(op, timing.get(criterion)), **readings[criterion], **full_depth})
            log_curve(points)
            describe(f"{method} `{model_name}` exiting by {criterion}. Operating point: threshold {op['threshold']:.4g} "
                     f"chosen on dev (test quality {op['test']['quality']:.2f} at {op['test']['layer_speedup']:.2f}x "
                     "layers). `test_quality_at_1.5x/2x/3x`: test quality read on the dev-chosen front at those "
                     "speed-ups (absent beyond its reach). Trade-off: chart `curve_test_quality` against Step "
                     "(= test layer speed-up x 100), or open the table `curve.json`.")
    shipped = shipped_criterion(summary["operating_points"])
    model_config = {"max_length": params.backbone.max_length, **shipped}
    info = log_exit_model(trained["checkpoint"], model_config, params.mlflow.registered_model if register else None,
                          name=model_name, input_example=model_input_example(params, summary["task"]))
    if register:
        op = summary["operating_points"].get(shipped.get("criterion"), {})
        describe_version(info, params.mlflow.registered_model, identity, shipped, op, readings.get(shipped.get("criterion"), {}),
                         dev_score=summary["full"]["dev_quality"], params=params,
                         rule=(f"Registered by the default run for the {identity['strategy']} objective. It ships "
                               f"criterion {shipped.get('criterion')} at threshold {shipped.get('threshold')}: of the "
                               "criteria's dev-chosen operating points (within evaluate.quality_tolerance of "
                               "full-depth dev quality), the one with the largest dev layer speed-up "
                               "(flows.tracking.shipped_criterion). Test numbers never choose."))


def model_input_example(params: Params, task: str):
    """Two dev rows of ``task`` as the model's input (``text_a``, and ``text_b`` for pairs)."""
    import pandas as pd

    from flows.layout import Layout
    from tasks.data import load_columns

    try:
        cols = load_columns(Layout.from_params(params).data, task, "dev")
    except FileNotFoundError:
        return None
    example = {"text_a": cols["text_a"][:2]}
    if any(t is not None for t in cols.get("text_b", [])[:2]):
        example["text_b"] = cols["text_b"][:2]
    return pd.DataFrame(example)


def describe_version(info, name: str, identity: dict, shipped: dict, op: dict, readings: dict, dev_score: float,
                     params: Params, rule: str, alias: str | None = None) -> None:
    """A registered version explains itself: ``rule`` (why this model, why this criterion and
    threshold) as its description, the schema's version tags, then the alias (default
    ``recommended``) moved by the comparison's champion rule (``flows.champions.challenge``)."""
    from flows.champions import challenge
    from tasks.metric_schema import GIT_COMMIT, NOT_APPLICABLE, RECOMMENDED_ALIAS, operating_metrics

    client, version = mlflow.MlflowClient(), info.registered_model_version
    alias = alias or RECOMMENDED_ALIAS
    client.update_model_version(name, version, description=rule + f" Alias `{alias}`: the version with the highest "
                                "full-depth dev quality (tag dev_score) among those registered, the comparison's "
                                "champion rule.")
    tags = {**identity, **{k: v for k, v in shipped.items()}, "dev_score": dev_score, **readings,
            "git_commit": provenance_tags(params.root)[GIT_COMMIT], "run_id": info.run_id}
    if op:
        tags.update(operating_metrics(op))
    for key in ("criterion", "threshold"):  # a one-point method (HashEE) ships no exit rule
        tags.setdefault(key, NOT_APPLICABLE)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))  # exact: dev_score is compared by the alias rule
    challenge(client, name, alias, version, dev_score)


def log_exit_model(checkpoint, model_config: dict, registered_model_name: str | None = None, name: str = "model",
                   input_example=None):
    """Log a checkpoint as the model ``name`` of the active run (an MLflow pyfunc over the
    ``save_pretrained``-style folder, our code shipped with it), with a signature over
    ``input_example`` (``text_a``[, ``text_b``] -> ``prediction``, ``exit_layer``), registered
    when named; returns MLflow's ``ModelInfo``."""
    import re

    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from tasks.mlflow_model import MultiExitPyfunc

    signature = None
    if input_example is not None:
        inputs = [ColSpec("string", column, required=column == "text_a") for column in input_example.columns]
        signature = ModelSignature(Schema(inputs), Schema([ColSpec("double", "prediction"), ColSpec("long", "exit_layer")]))
    return mlflow.pyfunc.log_model(
        name=re.sub(r"[^A-Za-z0-9_-]", "-", name),
        python_model=MultiExitPyfunc(),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(REPO_ROOT / "models"), str(REPO_ROOT / "tasks"), str(REPO_ROOT / "config")],
        model_config=model_config,
        signature=signature,
        input_example=input_example,
        pip_requirements=["torch==2.13.0", "transformers", "safetensors", "pandas", "pyyaml", "pydantic", "prefect"],
        registered_model_name=registered_model_name,
    )
