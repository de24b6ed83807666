"""Serve a flow as a Prefect deployment on a cron schedule, and stop its flow runs when serve stops.

What Prefect 3.9 does: ``flow.serve`` starts a ``Runner`` that polls the API and starts each
scheduled or triggered run of the deployment in a child process (multiprocessing ``spawn``, in
serve's own process group). When serve stops (all seen with Prefect 3.9.1):

- SIGTERM: the runner's ``handle_sigterm`` cancels the runs it tracks: SIGTERM to that one
  process, SIGKILL 30 s later, state Cancelled. The run's own children (Dask workers, DataLoader
  workers, ``subprocess`` calls) get no signal; orphaned, they keep running.
- SIGINT (``kill -INT``, or a Ctrl-C that reaches serve only): asyncio cancels the runner, whose
  task group then waits for the runs to finish (each is joined in a worker thread, which
  cancellation does not interrupt). Serve hangs while its runs train on, Running in the API.
- SIGHUP: serve dies (under ``exitflow``: ``_clean_termination`` raises ``Terminated`` and exits
  129); its runs and their children live on, Running in the API.

Under ``exitflow`` SIGTERM behaves as above: ``Runner.start`` replaces the command's handler.

What we add (``_TreeStoppingRunner``): one handler for all three signals. It first takes a
snapshot of every process under serve (psutil, recursively; multiprocessing's resource tracker
excepted), sends SIGTERM to all of them and leaves a thread to SIGKILL whatever is left after
``GRACE_S`` seconds; then Prefect's own graceful stop runs (cancel the runs, pause the schedule),
so the runs end Cancelled, or Crashed if they exit non-zero before the runner cancels them. A
second signal SIGKILLs at once. When the runner has stopped, for any reason, whatever still runs
under serve gets the same SIGTERM-then-SIGKILL. The handlers serve replaced are put back.

Why a snapshot and not a process group: Prefect gives no hook to start a served run in a new
session, and the snapshot is taken before anything is signalled, so every run's children are
found while they are still its children. A process that detaches itself (double fork) escapes;
those our flows start (Dask ``LocalCluster``, torch workers) do not.

Test: tests/flows/test_serve.py (a real ``prefect server start``; each signal).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

import psutil
from prefect.client.schemas import objects
from prefect.logging import get_logger
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL

GRACE_S = 5.0  # between SIGTERM and SIGKILL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# The deployment runs one flow run at a time, whoever starts it (the schedule, `prefect deployment
# run`, another runner or worker): a run due while one is running waits, AwaitingConcurrencySlot,
# and starts when that one ends (it then finds the steps done: served from the cache).
ONE_RUN_AT_A_TIME = objects.ConcurrencyLimitConfig(limit=1, collision_strategy=objects.ConcurrencyLimitStrategy.ENQUEUE)

logger = get_logger("exitflow.serve")


def _descendants() -> list[psutil.Process]:
    """Every live process under this one (flow runs and their children), except the resource
    tracker, which must outlive them to clean up what they leave behind."""
    procs = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "multiprocessing.resource_tracker" not in " ".join(proc.cmdline()):
                procs.append(proc)
        except psutil.Error:  # gone, or a zombie
            continue
    return procs


def _send(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)  # psutil checks the pid was not reused
        except psutil.Error:
            pass


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those not yet dead. Polls without ``wait()``, which would reap a flow-run process before
    the runner reads its exit code."""
    alive = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            pass
    return alive


def _stop(procs: list[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM ``procs``, then SIGKILL those still running after ``grace_s`` seconds."""
    _send(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (alive := _running(procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive:
        logger.warning("%d process(es) still running %.0f s after SIGTERM: SIGKILL", len(alive), grace_s)
        _send(alive, signal.SIGKILL)


class _TreeStoppingRunner(Runner):
    """A ``Runner`` whose stop signals take down the whole process tree of its flow runs."""

    _tree: list[psutil.Process] | None = None  # what the first signal found
    _stopper: threading.Thread | None = None  # SIGKILLs what is left of it after GRACE_S

    def handle_sigterm(self, signum: int = signal.SIGTERM, frame: Any = None) -> None:
        if self._tree is not None:  # a second signal: no more grace
            _send(_running(self._tree), signal.SIGKILL)
            return
        self._tree = _descendants()  # before any of them dies and orphans its children
        logger.info("%s: stopping the runner and the %d process(es) under it", signal.Signals(signum).name,
                    len(self._tree))
        _send(self._tree, signal.SIGTERM)
        self._stopper = threading.Thread(target=_stop, args=(self._tree,), name="stop-flow-runs", daemon=True)
        self._stopper.start()
        super().handle_sigterm(signum, frame)  # Prefect's graceful stop: cancel runs, pause the schedule


def serve_deployment(flow, name: str, cron: str, parameters: dict, limit: int = 1) -> None:
    """Serve ``flow`` as the deployment ``<flow name>/<name>`` on ``cron`` until SIGTERM, SIGINT
    or SIGHUP, then stop every flow-run process it started, with their children (see the module
    docstring).

    Args:
        flow: a Prefect flow, run in a child process per flow run.
        name: the deployment name.
        cron: its schedule, e.g. ``"0 3 * * *"``.
        parameters: the default parameters of each run.
        limit: at most this many runs at once in this runner (the deployment itself carries
            ``ONE_RUN_AT_A_TIME``: Prefect's server enforces it whoever starts a run).

    Raises:
        RuntimeError: ``PREFECT_API_URL`` is not set (a deployment needs a running Prefect server).
    """
    if not PREFECT_API_URL.value():
        raise RuntimeError("serving a deployment needs a running Prefect server: set PREFECT_API_URL")
    runner = _TreeStoppingRunner(name=name, limit=limit, pause_on_shutdown=True)
    runner.add_flow(flow, name=name, cron=cron, parameters=parameters, concurrency_limit=ONE_RUN_AT_A_TIME)
    logger.info("serving deployment '%s/%s' on cron %r (run now: prefect deployment run '%s/%s')",
                flow.name, name, cron, flow.name, name)
    # Runner.start installs handle_sigterm for SIGTERM (and leaves it); SIGINT and SIGHUP are ours.
    # asyncio.run keeps a SIGINT handler that is not Python's default one.
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        for sig in (signal.SIGINT, signal.SIGHUP):
            if previous[sig] is not signal.SIG_IGN:  # nohup stays nohup
                signal.signal(sig, runner.handle_sigterm)
        asyncio.run(runner.start())
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        if runner._stopper is not None:  # the runner may stop before the grace period ends
            runner._stopper.join()
        # runs started while the runner stopped, or a runner that stopped without a signal
        if leftover := _descendants():
            _stop(leftover)
    logger.info("stopped serving '%s/%s'", flow.name, name)
