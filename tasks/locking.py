"""One writer per output folder: an OS advisory lock (``fcntl.flock``) held while a step runs.

The lock file sits beside the folder, ``<parent>/.<name>.exitflow-lock`` (beside, not inside:
``atomic_dir`` replaces a folder wholesale, which would take a lock file inside with it). While
held it records the holder (pid, command line, start time); the holder deletes it on release, so a
finished run leaves nothing behind. A process that dies (even ``kill -9``) releases its flock with
it: the file it leaves is stale, and the next run takes it over at once. Whatever waits or fails
names the folder and the holder.

The name starts with a dot, so ``tasks.io.tree_hash`` (the cache key of an input folder) skips it,
and ``.dvcignore`` lists ``*.exitflow-lock``, so no DVC output or dependency hash sees a stale one.

A second run that needs a held folder prints one line on stderr and waits; with ``--no-wait``
(``EXITFLOW_NO_WAIT=1``) it raises ``FolderBusyError`` instead, which the CLI prints as one
``error:`` line and exits ``EXIT_BUSY``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from models.errors import ExitflowError

LOCK_SUFFIX = ".exitflow-lock"
NO_WAIT_ENV = "EXITFLOW_NO_WAIT"
MAX_COMMAND = 160  # characters of the holder's command line in messages
EXIT_BUSY = 75  # sysexits.h EX_TEMPFAIL: not a mistake, not a fault; the same command succeeds later


class FolderBusyError(ExitflowError):
    """Another run holds the output folder and ``--no-wait`` was asked for. Not a user mistake: it
    derives from ``ExitflowError`` so the CLI prints it as one line, with its own exit code."""

    exit_code = EXIT_BUSY


def lock_path(folder: Path) -> Path:
    """The lock file of ``folder``: ``<parent>/.<name>.exitflow-lock``."""
    folder = Path(os.path.abspath(folder))
    return folder.with_name(f".{folder.name}{LOCK_SUFFIX}")


def no_wait() -> bool:
    """``--no-wait`` or ``EXITFLOW_NO_WAIT`` set (to anything but empty, 0, false, no)."""
    return os.environ.get(NO_WAIT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _holder_record() -> bytes:
    argv = list(getattr(sys, "orig_argv", sys.argv))  # python /venv/bin/exitflow train -> python exitflow train
    argv = [Path(a).name if i == 0 or (i == 1 and os.path.isfile(a)) else a for i, a in enumerate(argv)]
    command = " ".join(shlex.join(argv).split()) if argv else "?"  # one line
    command = command if len(command) <= MAX_COMMAND else command[:MAX_COMMAND - 3] + "..."
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    return json.dumps({"pid": os.getpid(), "command": command, "started": started}).encode()


def describe_holder(path: Path) -> str:
    """``pid 123 (exitflow train), since 2026-12-06 03:50:12 UTC`` from the lock file at ``path``."""
    for _ in range(20):  # the holder writes its record right after taking the lock
        try:
            holder = json.loads(path.read_text())
            return f"pid {holder['pid']} ({holder['command']}), since {holder['started']}"
        except FileNotFoundError:
            return "a process that just finished"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return f"an unknown process (unreadable lock file {path})"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a holder deletes it on release)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _acquire(folder: Path, path: Path, wait: bool) -> int:
    """An open descriptor of ``path`` holding its exclusive flock; waits (one message) or raises."""
    told = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = describe_holder(path)
                if not wait:
                    raise FolderBusyError(f"{folder} is being written by {holder}; wait for it to finish, "
                                          f"or run without --no-wait ({NO_WAIT_ENV}) to wait") from None
                if not told:
                    print(f"waiting for {folder}: it is being written by {holder}", file=sys.stderr, flush=True)
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):  # else the holder deleted it as we got it: lock the new file
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: Path, wait: bool | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (one writer per folder across processes).

    Args:
        folder: the folder the block writes (it need not exist yet).
        wait: wait for another holder (default: unless ``no_wait()``).

    Raises:
        FolderBusyError: another process holds it and ``wait`` is false.
    """
    path = lock_path(folder)
    fd = _acquire(Path(folder), path, not no_wait() if wait is None else wait)
    try:
        os.ftruncate(fd, 0)  # a stale record from a killed holder, taken over
        os.write(fd, _holder_record())
        yield path
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiter then sees the file is gone, and retries
        os.close(fd)


def one_writer(run: Callable) -> Callable:
    """Decorate ``run(task, out_dir, **kwargs)`` to hold ``out_dir``'s lock while it runs."""
    @functools.wraps(run)
    def locked(task, out_dir: Path, **kwargs):
        with folder_lock(Path(out_dir)):
            return run(task, out_dir, **kwargs)
    return locked
