"""``exitflow``: the command line over the Prefect flows.

Every command reads ``params.yaml`` (``--params``), accepts ``--set section.key=value``
overrides, and runs offline by default (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# cached task results live with the project, not under $PREFECT_HOME, so the cache survives
# a different Prefect home (e.g. a dedicated server for schedules)
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(REPO_ROOT / ".prefect-results"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import typer  # noqa: E402

app = typer.Typer(help="exitflow: reproducible pipelines for early-exiting pretrained language models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="params file (paths inside resolve against its folder)")
SetOpt = typer.Option(None, "--set", "-s", help="override a value, e.g. --set train.epochs=3 (repeatable)")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _user_errors():
    from tasks.backbones import BackboneError
    from tasks.config import ConfigError
    from tasks.data import DataError
    from tasks.versioning import VersioningError
    from models.hashee import HashTableError
    from models.training import NonFiniteLossError
    from tasks.consistentee import MemorizedLayerError
    from tasks.difficulty import DifficultyDataError

    return (ConfigError, DataError, BackboneError, VersioningError, NonFiniteLossError, HashTableError,
            MemorizedLayerError, DifficultyDataError, ValueError, FileNotFoundError)


def _run(fn, *args, **kwargs):
    errors = _user_errors()
    try:
        return fn(*args, **kwargs)
    except errors as err:
        _fail(err)


def _check(params: Path, overrides, profile=None):
    from tasks.config import load_params

    return _run(load_params, params, overrides or [], profile)


@app.command()
def prepare(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Validate the task files and write canonical Parquet splits under data/ (then `dvc add data`)."""
    from flows.pipeline import exitflow_stage

    _check(params, set_)
    metas = _run(exitflow_stage, "prepare", str(params), overrides=set_)
    for task, meta in metas.items():
        typer.echo(f"{task}: " + ", ".join(f"{k} {v}" for k, v in meta["rows"].items()))


@app.command()
def train(strategy: str = typer.Option(..., help="joint | weighted | two_stage | alternating"),
          params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Train a multi-exit model with one objective (artifacts/train/<strategy>/); resumes if interrupted."""
    from flows.pipeline import exitflow_stage
    from models.objectives import OBJECTIVES

    if strategy not in OBJECTIVES:
        _fail(ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(OBJECTIVES)}"))
    _check(params, set_)
    result = _run(exitflow_stage, "train", str(params), strategy, overrides=set_)
    typer.echo(f"checkpoint: {result['checkpoint']} (dev layer scores {[round(s, 2) for s in result['dev_layer_scores']]})")


@app.command()
def evaluate(strategy: str = typer.Option(..., help="which trained strategy to evaluate"),
             params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Sweep every exit criterion, pick dev operating points, time real early exit (artifacts/evaluate/<strategy>/)."""
    from flows.pipeline import exitflow_stage

    _check(params, set_)
    result = _run(exitflow_stage, "evaluate", str(params), strategy, overrides=set_)
    typer.echo(f"metrics: {result['metrics']}\nplot: {result['plot']}")


@app.command()
def report(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Build the comparison table and plot from the evaluated strategies (artifacts/report/)."""
    from flows.pipeline import exitflow_stage

    _check(params, set_)
    typer.echo(_run(exitflow_stage, "report", str(params), overrides=set_)["table"])


@app.command()
def run(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt,
        full: bool = typer.Option(False, "--full", help="paper-scale profile (no subsampling, more epochs)")):
    """The default pipeline: prepare, train joint + alternating (with LTE), evaluate every criterion,
    HashEE (frequency hash), ConsistentEE (hardness-guided reward), report."""
    from flows.pipeline import exitflow_pipeline

    _check(params, set_, "full" if full else None)
    _run(exitflow_pipeline, str(params), set_ or [], "full" if full else None)


@app.command()
def hashee(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """HashEE with the configured hash (hashee.kind, default frequency, B = hashee.buckets): build the
    table, fine-tune with token-level exits, evaluate vs the full model (artifacts/hashee/default/)."""
    from flows.hashee import hashee_pipeline

    _check(params, set_)
    _run(hashee_pipeline, str(params), set_ or [])


@app.command("hashee-study")
def hashee_study(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Train and compare every hash function (hashee.study_kinds) and a (layers, buckets) grid
    (hashee.study_grid) on train.task; one table and plot in MLflow (experiment exitflow-hashee-study)."""
    from flows.hashee import hashee_study as study

    _check(params, set_)
    _run(study, str(params), set_ or [])


@app.command("consistentee")
def consistentee_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """ConsistentEE: weighted init, then up to consistentee.rounds rounds of memorized layer -> policy
    step (REINFORCE) -> heads step; Spearman table; evaluation vs entropy/patience/LTE
    (artifacts/consistentee/; MLflow experiment exitflow-consistentee). Resumes from the last finished round."""
    from flows.consistentee import consistentee_pipeline

    _check(params, set_)
    _run(consistentee_pipeline, str(params), set_ or [])


@app.command("consistentee-ablation")
def consistentee_ablation_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Vanilla vs hardness-guided reward over consistentee.ablation_alphas (paper Figure 4): one plot of
    test quality vs layer speed-up at tau (MLflow experiment exitflow-consistentee-ablation)."""
    from flows.consistentee import consistentee_ablation

    _check(params, set_)
    _run(consistentee_ablation, str(params), set_ or [])


@app.command("learnability")
def learnability_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Can instance difficulty be learned? Builds the difficulty datasets (published snli_model,
    train.task dev annotated by the joint model, CoNLL-2003 dev annotated by a multi-exit tagger),
    trains Majority / Linear-M / Linear-B / BiLSTM / BERT predictors, runs the human-difficulty
    classifier; table and F1 chart in MLflow experiment `learnability` (artifacts/learnability/)."""
    from flows.learnability import learnability

    _check(params, set_)
    _run(learnability, str(params), set_ or [])


@app.command()
def serve(params: Path = ParamsOpt, cron: Optional[str] = typer.Option(None, help="override schedule.cron")):
    """Register the default pipeline as a Prefect deployment on a cron schedule and serve it.

    Needs a running Prefect server: `prefect server start`, then
    `export PREFECT_API_URL=http://127.0.0.1:4200/api`.
    """
    from flows.pipeline import exitflow_pipeline

    cfg = _check(params, [])
    if not os.environ.get("PREFECT_API_URL"):
        _fail(RuntimeError("schedules need a running Prefect server: start one with `prefect server start` "
                           "and export PREFECT_API_URL=http://127.0.0.1:4200/api"))
    exitflow_pipeline.serve(name=cfg.schedule.deployment, cron=cron or cfg.schedule.cron, limit=1,
                            parameters={"params_path": str(params.resolve())})  # limit: no overlapping runs


def main():  # pragma: no cover
    app(prog_name="exitflow")


if __name__ == "__main__":
    sys.exit(main())
