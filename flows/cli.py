"""``exitflow``: the command line over the Prefect flows.

Every command reads ``params.yaml`` (``--params``), accepts ``--set section.key=value``
overrides, and runs offline by default (``HF_HUB_OFFLINE=1``).

Errors: a user mistake (``models.errors.ExitflowError``: bad data, bad params, a missing or
damaged checkpoint) prints one ``error: ...`` line and exits 2; an environment fault
(``models.errors.EnvironmentFault``: a full disk, a tracking server gone) one line and exits 3;
``--verbose`` / ``EXITFLOW_VERBOSE=1`` adds its traceback. Any other exception is a bug and keeps its traceback. Signals, the temporary
Prefect server and the console log filter: ``flows.runtime``.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from flows import registry, runtime  # sets the environment defaults (HF_HUB_OFFLINE, ...) before any command imports a flow
from flows.runtime import VERBOSE_ENV

HELP = (
    "exitflow: reproducible pipelines for early-exiting pretrained language models.\n\n"
    "A user error (bad data, bad params, a missing or damaged checkpoint) prints one `error:` line and exits 2; "
    "an environment fault (a full disk, a tracking server gone) one line and exits 3; "
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
                                                 help=f"show tracebacks of user errors too (or set {VERBOSE_ENV}=1)"),
                    no_wait: bool = typer.Option(False, "--no-wait", help="fail at once (exit 75) instead of waiting when "
                                                 "another run writes a step's output folder (or set EXITFLOW_NO_WAIT=1)"),
                    verify: Optional[str] = typer.Option(None, "--verify", help="a cached step whose outputs changed "
                                                         "on disk: rebuild (default), strict (refuse) or off "
                                                         "(no hashing); or set EXITFLOW_VERIFY")):
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    if no_wait:
        os.environ["EXITFLOW_NO_WAIT"] = "1"  # tasks.locking reads it, in Dask workers too
    if verify:
        if verify not in ("rebuild", "strict", "off"):
            raise typer.BadParameter(f"{verify!r}: choose rebuild, strict or off", param_hint="--verify")
        os.environ["EXITFLOW_VERIFY"] = verify


# ---- user errors: one clean line, no traceback on the console ------------------------------------

def _fail(err: Exception) -> None:
    """Print ``err`` as one red ``error:`` line (its traceback first when verbose) and exit 2, or 3
    for an environment fault (``models.errors.EnvironmentFault``)."""
    if runtime.verbose() and err.__traceback__ is not None and err is not runtime.CONSOLE_FILTER.last_seen:
        traceback.print_exception(err, file=sys.stderr)
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    from models.errors import EnvironmentFault

    # 2: a user mistake, 3: an environment fault, 75: an output folder busy (tasks.locking, --no-wait)
    raise typer.Exit(code=getattr(err, "exit_code", 3 if isinstance(err, EnvironmentFault) else 2))


def _run(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a user error (``ExitflowError``) ends the command through ``_fail``,
    any other exception propagates with its traceback."""
    user_error = runtime.user_error_class()
    runtime.filter_console_logs()
    try:
        return fn(*args, **kwargs)
    except user_error as err:
        _fail(err)


def _run_flow(flow, *args, **kwargs):
    """``_run`` for a flow: its Prefect server started first, bound to this process (``runtime.ensure_prefect_api``)."""
    runtime.ensure_prefect_api()
    return _run(flow, *args, **kwargs)


def _check(params: Path, overrides, profile=None):
    from config.params import load_params

    return _run(load_params, params, overrides or [], profile)


@app.command()
def prepare(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Validate the task files and write canonical Parquet splits under data/ (then `dvc add data`)."""
    from flows.pipeline import exitflow_stage

    _check(params, set_)
    metas = _run_flow(exitflow_stage, "prepare", str(params), overrides=set_)
    for task, meta in metas.items():
        typer.echo(f"{task}: " + ", ".join(f"{k} {v}" for k, v in meta["rows"].items()))


@app.command()
def report(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt):
    """Build the comparison table and plot from the evaluated strategies (artifacts/<task>/seed-<seed>/report/)."""
    from flows.pipeline import exitflow_stage

    _check(params, set_)
    typer.echo(_run_flow(exitflow_stage, "report", str(params), overrides=set_)["table"])


@app.command()
def run(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt,
        full: bool = typer.Option(False, "--full", help="paper-scale profile (no subsampling, more epochs)")):
    """The default pipeline: prepare, train joint + alternating (with LTE), evaluate every criterion,
    HashEE (frequency hash), ConsistentEE (hardness-guided reward), report."""
    from flows.pipeline import exitflow_pipeline

    _check(params, set_, "full" if full else None)
    _run_flow(exitflow_pipeline, str(params), set_ or [], "full" if full else None)


@app.command()
def docs(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt,
         out: Optional[Path] = typer.Option(None, "--out", help="write into this folder instead of docs/ beside the params file")):
    """Render the documentation pages generated from the project: docs/results/ from the runs' JSON outputs and
    benchmarks/results/ (a page whose outputs are absent says which command makes them), docs/reference/cli.md
    and docs/reference/params.md from the code. No flow runs."""
    from flows.docs import render_docs

    _check(params, set_)
    for path in _run(render_docs, params, set_ or [], out):
        typer.echo(str(path))


# ---- the methods' commands, derived from their registrations (flows/methods/) ------------------------

def _method_command(method, command):
    """A typer command running ``command`` of ``method`` with ``--params``, ``--set`` and its options."""
    def run_command(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt, **options):
        _check(params, set_)
        flow_command = method.function(command.function)  # imported before _run filters the console logs it sets up
        result = _run_flow(flow_command, str(params), set_ or [], **options)
        if isinstance(result, str):
            typer.echo(result)

    parameters = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
                  for name, annotation, default in [("params", Path, ParamsOpt), ("set_", Optional[list[str]], SetOpt)]]
    parameters += [inspect.Parameter(o.keyword, inspect.Parameter.KEYWORD_ONLY, annotation=o.annotation, default=o.default)
                   for o in command.options]
    run_command.__signature__ = inspect.Signature(parameters)
    run_command.__doc__ = command.help
    return run_command


for _method, _command in registry.commands():
    app.command(_command.name)(_method_command(_method, _command))


@app.command("compare")
def compare_cmd(params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt,
                profile: Optional[str] = typer.Option(None, "--profile",
                                                      help="quick (the whole grid in under 90 min on 2 cores), standard "
                                                           "(the default run's budget, 3 seeds) or full (all rows, 3 "
                                                           "seeds); from params.yaml profiles"),
                address: Optional[str] = typer.Option(None, "--address",
                                                      help="submit the cells to this Dask scheduler (tcp://host:8786) "
                                                           "instead of a LocalCluster"),
                sequential: bool = typer.Option(False, "--sequential", help="no Dask: run the cells one after another"),
                budget: Optional[str] = typer.Option(None, "--budget",
                                                     help="start no unit once this much wall-clock is spent (170m, "
                                                          "2h30m; compare.budget); the next run continues from the cache "
                                                          "and the unit records (compare.unit_records)")):
    """Every method (compare.methods) on every task (compare.tasks + data.custom) and seed
    (compare.seeds), each (task, method) with its learning rate chosen on dev from compare.lr_grid,
    next to static smaller models (the first k layers fine-tuned, compare.static_layers); cells run on
    a Dask LocalCluster sized to the machine. Tables and per-task Pareto plots in
    artifacts/compare/<profile>/report/; MLflow experiment exitflow-compare (a nested run per cell,
    a `champion` alias per task and method). Finished units are reused: from the cache, and on any
    machine from the unit records a profile keeps for committing (compare.unit_records; standard:
    results/compare/standard)."""
    from flows.compare import compare_flow

    overrides = (list(set_ or []) + (["compare.sequential=true"] if sequential else [])
                 + ([f"compare.budget={json.dumps(budget)}"] if budget is not None else []))  # quoted: --budget "" is an error
    cfg = _check(params, overrides + ([f"compare.address={address}"] if address else []), profile)
    if cfg.compare.address and not cfg.compare.sequential:  # before the Prefect server: fail in seconds
        from flows.compare import check_dask_address

        _run(check_dask_address, cfg.compare.address)
    _run_flow(compare_flow, str(params), overrides, profile, address)


@app.command("reproduce-cell")
def reproduce_cell_cmd(task: str = typer.Argument(..., help="the cell's task, e.g. sst2"),
                       method: str = typer.Argument(..., help="the cell's method, e.g. joint or static-3"),
                       seed: int = typer.Option(42, "--seed", help="the cell's seed"),
                       params: Path = ParamsOpt, set_: Optional[list[str]] = SetOpt,
                       profile: Optional[str] = typer.Option("standard", "--profile",
                                                             help="the comparison profile whose report holds the cell"),
                       keep: bool = typer.Option(False, "--keep", help="keep the re-run's folder "
                                                 "(artifacts/compare/<profile>/reproduce-runs/.run-*)")):
    """Re-run one cell of a comparison report from nothing (fresh folder, no cache) at the learning
    rate the report records, and compare every quality figure and per-row test prediction with the
    report's, exactly (thresholds to float32 rounding); wall-clock is left out. Writes
    artifacts/compare/<profile>/reproduced/<unit>/result.json and exits 1 when a figure or a prediction differs
    or the re-run fails. On a second machine with the first one's report, this checks
    that a cell reproduces across machines."""
    from flows.compare_reproduce import reproduce_cell_flow

    _check(params, set_, profile)
    verdict = _run_flow(reproduce_cell_flow, str(params), set_ or [], profile, task, method, seed, keep)
    if not verdict["same_figures"]:
        raise typer.Exit(1)


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
