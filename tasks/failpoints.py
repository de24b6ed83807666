"""Failpoints: fixed places where a run kills itself with SIGKILL, for the kill -9 tests.

``failpoint(name)`` does nothing unless the environment variable ``EXITFLOW_FAILPOINT`` is
``name`` (fire at the first pass) or ``name:n`` (fire at the n-th pass in this process). Firing
sends SIGKILL to the process itself: no ``finally`` block, ``atexit`` hook or signal handler
runs, as with ``kill -9``. Failpoints change no output (``tests/faults/test_kill.py``).

The points:

``train.batch``
    ``tasks/train.py``, between two training batches (after each one; ``:n`` counts batches
    across epochs), so the run dies mid-epoch with the previous epoch's ``_resume`` state.
``checkpoint.write``
    ``tasks/backbones.save_checkpoint``: the backbone and ``exits.safetensors`` are in the
    temporary folder, ``exitflow.json`` and the rename into place are not done.
``evaluate.write``
    ``tasks/evaluate.write_evaluation``: after the recording pass and the sweeps, with
    ``curves.json`` and ``metrics.json`` written and the other files and ``result.json`` not.
``dvc.commit``
    ``tasks/versioning``, while the ``dvc commit`` subprocess runs: once it holds DVC's
    repository lock (its lock file in the repository's ``.dvc`` folder), the dvc process and then this one are killed.
``prepare.split``
    ``tasks/data.prepare_task``, after each split written to the task's temporary folder
    (``:n``: after the n-th), before ``meta.json`` and the rename.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from typing import Callable

ENV = "EXITFLOW_FAILPOINT"
_passes: Counter = Counter()


def _fires(name: str) -> bool:
    """Count this pass at ``name``; True when ``EXITFLOW_FAILPOINT`` asks to fire at it."""
    spec = os.environ.get(ENV)
    if not spec or spec.partition(":")[0] != name:
        return False
    _passes[name] += 1
    return _passes[name] == int(spec.partition(":")[2] or 1)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # the signal is delivered before this returns


def failpoint(name: str) -> None:
    """SIGKILL this process here when ``EXITFLOW_FAILPOINT`` names this pass; else nothing."""
    if _fires(name):
        _kill_self()


def failpoint_during(name: str, proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    """At failpoint ``name``: once ``ready()`` holds while ``proc`` runs (polled; at most
    ``timeout`` s), SIGKILL ``proc``, then this process."""
    if not _fires(name):
        return
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    _kill_self()


def passing(items, name: str):
    """Yield ``items``, passing failpoint ``name`` after each one is consumed."""
    for item in items:
        yield item
        failpoint(name)
