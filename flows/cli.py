"""``exitflow``: the command line over the Prefect flows.

Every command reads ``params.yaml`` (``--params``), accepts ``--set section.key=value``
overrides, and runs offline by default (``HF_HUB_OFFLINE=1``).

Errors: a user mistake (``models.errors.ExitflowError``: bad data, bad params, a missing
checkpoint) prints one ``error: ...`` line and exits 2; ``--verbose`` / ``EXITFLOW_VERBOSE=1``
adds its traceback. Any other exception is a bug and keeps its traceback. Signals, the temporary
Prefect server and the console log filter: ``flows.runtime``.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from flows import runtime  # sets the environment defaults (HF_HUB_OFFLINE, ...) before any command imports a flow
from flows.runtime import VERBOSE_ENV

HELP = (
    "exitflow: reproducible pipelines for early-exiting pretrained language models.\n\n"
    "A user error (bad data, bad params, a missing checkpoint) prints one `error:` line and exits 2; "
    f"--verbose or {VERBOSE_ENV}=1 adds its traceback.\n\n"
    "Startup: a command that runs a flow first starts Prefect's temporary server (about 5-10 s on a "
    "2-core machine). To skip that, keep a server running in another terminal (`prefect server start`) "
    "and `export PREFECT_API_URL=http://127.0.0.1:4200/api`."
)


class ExitflowApp(typer.Typer):
    """The typer app; calling it (the ``exitflow`` entry point) runs the command under
    ``flows.runtime.command_process`` (clean termination, no orphaned Prefect server)."""

    def __call__(self, *args, **kwargs):
        with runtime.command_process():
            return super().__call__(*args, **kwargs)


app = ExitflowApp(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="params file (paths inside resolve against its folder)")
SetOpt = typer.Option(None, "--set", "-s", help="override a value, e.g. --set train.epochs=3 (repeatable)")


@app.callback()
def _global_options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                                 help=f"show tracebacks of user errors too (or set {VERBOSE_ENV}=1)")):
    if verbose:
        os.environ[VERBOSE_ENV] = "1"


# ---- user errors: one clean line, no traceback on the console ------------------------------------

def _fail(err: Exception) -> None:
    """Print ``err`` as one red ``error:`` line (its traceback first when verbose) and exit 2."""
    if runtime.verbose() and err.__traceback__ is not None and err is not runtime.CONSOLE_FILTER.last_seen:
        traceback.print_exception(err, file=sys.stderr)
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a user error (``ExitflowError``) ends the command through ``_fail``,
    any other exception propagates with its traceback."""
    user_error = runtime.user_error_class()
    runtime.filter_console_logs()
    try:
        return fn(*args, **kwargs)
    except user_error as err:
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
    """Train a multi-exit model with one objective
    (artifacts/<task>/seed-<seed>/train/<strategy>/); resumes if interrupted."""
    from flows.pipeline import exitflow_stage
    from models.errors import ExitflowError
    from models.objectives import OBJECTIVES

    if strategy not in OBJECTIVES:
        _fail(ExitflowError(f"unknown strategy {strategy!r}; choose one of {', '.join(OBJECTIVES)}"))
    _check(params, set_)
    result = _run(exitflow_stage, "train", str(params), strategy, overrides=set_)
    typer.echo(f"checkpoint: {result['checkpoint']} (dev layer scores {[round(s, 2) for s in result['dev_layer_scores']]})")


@app.command()
def evaluate(strategy: str = typer.Option(..., help="which trained strategy to evaluate"),
             params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Sweep every exit criterion, pick dev operating points, time real early exit
    (artifacts/<task>/seed-<seed>/evaluate/<strategy>/)."""
    from flows.pipeline import exitflow_stage

    _check(params, set_)
    result = _run(exitflow_stage, "evaluate", str(params), strategy, overrides=set_)
    typer.echo(f"metrics: {result['metrics']}\nplot: {result['plot']}")


@app.command()
def report(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Build the comparison table and plot from the evaluated strategies (artifacts/<task>/seed-<seed>/report/)."""
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
    table, fine-tune with token-level exits, evaluate vs the full model
    (artifacts/<task>/seed-<seed>/hashee/default/)."""
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
    (artifacts/<task>/seed-<seed>/consistentee/; MLflow experiment exitflow-consistentee).
    Resumes from the last finished round."""
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


@app.command("past-future")
def past_future_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt,
                    task: Optional[list[str]] = typer.Option(None, "--task",
                                                             help="only these tasks (default: past_future.tasks)"),
                    default_run: bool = typer.Option(False, "--default-run",
                                                     help="only the model `exitflow run` adds: past_future.in_default_run "
                                                          "with the future on train.task (artifacts/.../past_future/default/)")):
    """Global Past-Future: each past strategy (past_future.strategies) without and with the imitated
    future, the naive vote / ensemble and local joint / weighted exits with train's budget; a table
    at past_future.speedups (chosen on dev, reported on test), a plot and the claim check
    (artifacts/<task>/seed-<seed>/past_future/; MLflow experiment exitflow-past-future).
    Finished models are reused."""
    from flows.past_future import past_future_pipeline
    from flows.pipeline import exitflow_stage

    _check(params, set_)
    if default_run:
        _run(exitflow_stage, "past_future_default", str(params), overrides=set_)
        return
    _run(past_future_pipeline, str(params), set_ or [], task or None)


@app.command("leco")
def leco_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt,
             task: Optional[list[str]] = typer.Option(None, "--task", help="only these tasks (default: leco.tasks)"),
             until: str = typer.Option("compare", "--until",
                                       help="the last step to run: search | derive | train | compare (earlier steps are reused)")):
    """LECO: search one exit architecture per layer (first-order DARTS over leco.search_space,
    leco.search_epochs), derive it (argmax per choice, null included: leco/derive/architecture.json),
    retrain the derived exits from the pretrained backbone with train's budget, then compare: AVG / BEST
    layer-wise test scores against leco.baselines, and COBEE against entropy, patience and LTE at
    leco.speedups (artifacts/<task>/seed-<seed>/leco/; MLflow experiment exitflow-leco). Finished steps are reused."""
    from flows.leco import STEPS, leco_pipeline
    from models.errors import ExitflowError

    _check(params, set_)
    if until not in STEPS:
        _fail(ExitflowError(f"--until {until!r} is not a LECO step; choose one of {', '.join(STEPS)}"))
    _run(leco_pipeline, str(params), set_ or [], task or None, until)


@app.command("generate")
def generate_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Early exit in generation on a decoder LLM (generate.decoder, default the packaged SmolLM2-135M-Instruct
    GGUF): templated prompts -> the model's own full-depth greedy responses -> exit norms trained with the
    weighted loss -> ConsistentEE policy (REINFORCE) -> ROUGE-L vs speed-up of static, CALM softmax /
    saturation and policy exits with state copying (artifacts/generate/seed-<seed>/; MLflow experiment
    exitflow-generate). Finished steps are reused. Timing: benchmarks/bench_generation.py."""
    from flows.generate import generate_pipeline

    _check(params, set_)
    _run(generate_pipeline, str(params), set_ or [])


@app.command("learnability")
def learnability_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Can instance difficulty be learned? Builds the difficulty datasets (published snli_model,
    train.task dev annotated by the joint model, CoNLL-2003 dev annotated by a multi-exit tagger),
    trains Majority / Linear-M / Linear-B / BiLSTM / BERT predictors, runs the human-difficulty
    classifier; table and F1 chart in MLflow experiment `learnability` (artifacts/<task>/seed-<seed>/learnability/,
    and artifacts/learnability/seed-<seed>/ for the studies that do not read train.task)."""
    from flows.learnability import learnability

    _check(params, set_)
    _run(learnability, str(params), set_ or [])


@app.command("compare")
def compare_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt,
                profile: Optional[str] = typer.Option(None, "--profile",
                                                      help="quick (the whole grid in under 90 min on 2 cores) or full "
                                                           "(all rows, 3 seeds); from params.yaml profiles"),
                address: Optional[str] = typer.Option(None, "--address",
                                                      help="submit the cells to this Dask scheduler (tcp://host:8786) "
                                                           "instead of a LocalCluster"),
                sequential: bool = typer.Option(False, "--sequential", help="no Dask: run the cells one after another")):
    """Every method (compare.methods) on every task (compare.tasks + data.custom) and seed
    (compare.seeds), each (task, method) with its learning rate chosen on dev from compare.lr_grid,
    next to static smaller models (the first k layers fine-tuned, compare.static_layers); cells run on
    a Dask LocalCluster sized to the machine. Tables and per-task Pareto plots in
    artifacts/compare/<profile>/report/; MLflow experiment exitflow-compare (a nested run per cell,
    a `champion` alias per task and method). Finished cells are reused."""
    from flows.compare import compare_flow

    overrides = list(set_ or []) + (["compare.sequential=true"] if sequential else [])
    cfg = _check(params, overrides + ([f"compare.address={address}"] if address else []), profile)
    if cfg.compare.address and not cfg.compare.sequential:  # before the Prefect server: fail in seconds
        from flows.compare import check_dask_address

        _run(check_dask_address, cfg.compare.address)
    runtime.ensure_prefect_api()
    _run(compare_flow, str(params), overrides, profile, address)


@app.command()
def serve(params: Path = ParamsOpt, cron: Optional[str] = typer.Option(None, help="override schedule.cron"),
          profile: Optional[str] = typer.Option(None, help="the params.yaml profile each run uses "
                                                           "(quick, full; default: none)"),
          address: Optional[str] = typer.Option(None, "--address", help="each run submits its cells to this Dask "
                                                                       "scheduler (tcp://host:8786)")):
    """Serve the comparison flow (flows.compare) as the Prefect deployment schedule.deployment
    (default nightly-comparison) on schedule.cron, one run at a time, until stopped.

    Needs a running Prefect server: `prefect server start`, then
    `export PREFECT_API_URL=http://127.0.0.1:4200/api`.
    Start a run now with the `prefect deployment run` command serve prints.
    Ctrl-C, SIGTERM or SIGHUP stops serve and the runs it started, their child processes too.
    """
    from models.errors import ExitflowError

    cfg = _check(params, [f"compare.address={address}"] if address else [], profile)
    if not os.environ.get("PREFECT_API_URL"):
        _fail(ExitflowError("schedules need a running Prefect server: start one with `prefect server start` "
                            "and export PREFECT_API_URL=http://127.0.0.1:4200/api"))
    from flows.compare import compare_flow
    from flows.serving import serve_deployment

    serve_deployment(compare_flow, name=cfg.schedule.deployment, cron=cron or cfg.schedule.cron,
                     parameters={"params_path": str(params.resolve()), "profile": profile, "address": address})


def main():  # pragma: no cover
    app(prog_name="exitflow")


if __name__ == "__main__":
    sys.exit(main())
