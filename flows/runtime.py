"""The ``exitflow`` process around its commands: environment defaults, termination signals, the
temporary Prefect server, and the console filter that keeps a user error to one line.

Importing this module sets the environment defaults (offline hub, project-local Prefect results),
so ``flows.cli`` imports it before anything that reads them; it imports neither Prefect nor
``models`` at import time, so ``exitflow --help`` stays fast.

Termination: SIGTERM and SIGHUP become ``Terminated`` (a ``SystemExit``) in the main thread, so a
killed command unwinds like an interrupted one: Prefect marks its runs Crashed, ``_resume``
states stay on disk, and the temporary Prefect server this process started is stopped instead of
being orphaned (with the default handler the process died and the server lived on). The server is
also stopped when a closed output pipe breaks Prefect's own stop (``stop_prefect_servers``).
``serve`` takes SIGTERM, SIGHUP and SIGINT over while it serves (``flows.serving``): it stops the
flow-run processes it started, their children too, and returns.

User errors (``models.errors.ExitflowError``): Prefect's console copy of their traceback is
filtered out (``ConsoleFilter``) but stays in the Prefect run log; ``--verbose`` /
``EXITFLOW_VERBOSE=1`` shows it. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# cached task results live with the project, not under $PREFECT_HOME, so the cache survives
# a different Prefect home (e.g. a dedicated server for schedules)
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(REPO_ROOT / ".prefect-results"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Prefect's 20 s: a loaded 2-core machine starting two commands' servers at once was seen to need more
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

VERBOSE_ENV = "EXITFLOW_VERBOSE"


def verbose() -> bool:
    """``--verbose`` or ``EXITFLOW_VERBOSE`` set (to anything but empty, 0, false, no)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def user_error_class() -> type[Exception]:
    """``CleanFailure`` (a user error, exit 2, or an environment fault, exit 3), imported on first
    use: ``models`` loads torch, which ``--help`` should not wait for."""
    from models.errors import CleanFailure

    return CleanFailure


def machine_description(device: str = "cpu") -> str:
    """The machine a measurement ran on, for the files that record one: ``AMD EPYC, 2 cores, torch
    2.13.0+cpu (2 threads), Linux``, and the GPU's name when ``device`` (``auto`` | ``cpu`` | ``cuda``)
    puts the work on one."""
    import platform

    import torch

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    text = (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} thread{'' if threads == 1 else 's'}), "
            f"{platform.system()}")
    if device != "cpu" and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


# ---- termination: SIGTERM / SIGHUP unwind the command and stop its temporary server ---------------

class Terminated(SystemExit):
    """SIGTERM or SIGHUP, raised in the main thread; exit status 128 + signal number."""


_signalled = False


def _on_termination_signal(signum, _frame) -> None:
    """First signal: raise ``Terminated``, so finally blocks and Prefect's crash reports run, then
    ``exit_now``. A second one while that is under way: stop the temporary server, exit at once.

    During a flow run Prefect owns SIGTERM (``capture_sigterm``): it marks the runs Crashed,
    restores this handler and re-sends the signal, which lands here."""
    global _signalled
    if _signalled:
        stop_prefect_servers(wait=False)
        os._exit(128 + signum)
    _signalled = True
    raise Terminated(128 + signum)


def stop_prefect_servers(wait: bool = True) -> None:
    """Stop the temporary Prefect server(s) this process started, without logging.

    Prefect's own ``SubprocessASGIServer.stop`` (at exit) logs "Stopping temporary server" first;
    when stderr is a closed pipe (``exitflow ... 2>&1 | head``), its rich console handler turns
    the write into ``SystemExit`` before ``terminate()``, and the server outlived the command.
    Clearing ``server_process`` makes Prefect's stop skip it; ``running`` stays set so nothing
    starts a new server this late."""
    module = sys.modules.get("prefect.server.api.server")
    if module is None:  # never imported: no temporary server was started
        return
    for server in list(module.SubprocessASGIServer._instances.values()):
        process, server.server_process = server.server_process, None
        if process is None or process.poll() is not None:
            continue
        process.terminate()
        if wait:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def exit_now(code: int) -> None:
    """Leave after a termination signal, in seconds: send the queued run logs to Prefect (its
    handler waits at most 5 s), end a still-open MLflow run as KILLED, stop the temporary server,
    then ``os._exit``. A normal exit would first wait for Prefect's log and event workers to drain,
    which never ends once their server is gone (seen: alive long after SIGTERM)."""
    for handler in logging.getLogger("prefect.flow_runs").handlers:
        try:
            handler.flush()
        except Exception:  # best effort: the logs also stay on the console
            pass
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        try:
            while mlflow.active_run() is not None:
                mlflow.end_run(status="KILLED")
        except Exception:
            pass
    stop_prefect_servers()
    remove_private_prefect_home()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


@contextmanager
def clean_termination():
    """Install the termination handlers for one command; an ignored signal (nohup) stays ignored."""
    installed = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) is signal.SIG_DFL:
                installed[sig] = signal.signal(sig, _on_termination_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    except Terminated as exc:
        try:
            print(f"terminated (signal {exc.code - 128}); finished steps and `_resume` states are kept, "
                  "re-run the command to continue", file=sys.stderr, flush=True)
        except OSError:  # stderr already gone
            pass
        exit_now(exc.code)
    finally:
        for sig, previous in installed.items():
            signal.signal(sig, previous)


@contextmanager
def command_process():
    """Run one ``exitflow`` command: under ``clean_termination``, with a private database for its
    temporary Prefect server, and sure to stop that server at exit."""
    # registered first, so it runs last at exit: after the server is stopped
    atexit.register(remove_private_prefect_home)
    # registered before Prefect registers its own stop, so it runs after it at exit and stops
    # a server that one left running (see stop_prefect_servers)
    atexit.register(stop_prefect_servers)
    use_private_prefect_database()
    with clean_termination():
        yield


# ---- commands side by side: each temporary server on a database of its own ---------------------

PRIVATE_HOME_PREFIX = "exitflow-prefect-"  # + pid: a folder in tempfile.gettempdir(), removed at exit
_BUILD_TEMPLATE = """
import asyncio
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def build():
    db = provide_database_interface()
    await db.create_db()
    async with await db.session() as session:
        await run_block_auto_registration(session=session)

asyncio.run(build())
"""
_private_home: Path | None = None


def _template_database() -> Path | None:
    """A migrated Prefect server database with its block types registered, shared by every command
    on this machine (one per Prefect version, in the user's cache folder: ``$XDG_CACHE_HOME/exitflow``,
    default ``.cache/exitflow`` in the home folder) and only ever copied.
    Built here when missing (as long as one server start's migration); None while another command
    builds it: then this one's server migrates its own database, and waits on nobody."""
    import fcntl
    import importlib.metadata
    import tempfile

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exitflow"
    template = cache / f"prefect-{importlib.metadata.version('prefect')}-server.db"
    if template.is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{template.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if template.is_file():
            return template
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{template.name}.", suffix=".tmp")
        os.close(fd)
        env = {**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp}"}
        try:
            subprocess.run([sys.executable, "-c", _BUILD_TEMPLATE], env=env, check=True, timeout=300,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.replace(tmp, template)
        except (OSError, subprocess.SubprocessError):  # no template: each server migrates its own
            return None
        finally:
            Path(tmp).unlink(missing_ok=True)
    return template


def _remove_orphaned_homes(tmp: Path, idle_s: float = 3600) -> None:
    """Remove the private homes of commands that died without cleaning up (``kill -9``): their
    pid is gone and nothing was written there for ``idle_s`` seconds (a pid seen from another
    PID namespace sharing the temporary folder keeps its home while it works)."""
    import shutil
    import time

    for home in tmp.glob(f"{PRIVATE_HOME_PREFIX}*"):
        try:
            if time.time() - home.stat().st_mtime < idle_s:
                continue
            os.kill(int(home.name[len(PRIVATE_HOME_PREFIX):].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(home, ignore_errors=True)
        except (ValueError, OSError):  # not ours to judge (PermissionError: another user's), or gone
            continue


def use_private_prefect_database() -> None:
    """Point the temporary Prefect server this command may start at a database of its own, in a
    private folder removed at exit, so commands started together never race on one SQLite file
    (seen: a migration timing out on ``database is locked``, and the second command failing with
    "Timed out while attempting to connect to ephemeral Prefect API server"). The database starts
    as a copy of ``_template_database()``. Nothing changes when ``PREFECT_API_URL`` or a database
    URL is set. Cached task results stay in the project's ``.prefect-results``."""
    global _private_home
    if "--help" in sys.argv[1:]:
        return  # no server starts: no database to build
    if _private_home is not None or any(os.environ.get(k) for k in (
            "PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")):
        return
    import shutil
    import tempfile

    _remove_orphaned_homes(Path(tempfile.gettempdir()))
    template = _template_database()
    _private_home = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_HOME_PREFIX}{os.getpid()}-"))
    database = _private_home / "prefect.db"
    if template is not None:
        shutil.copyfile(template, database)
        os.environ["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "false"  # the template has them
    os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{database}"
    os.environ["PREFECT_MEMO_STORE_PATH"] = str(_private_home / "memo_store.toml")


def remove_private_prefect_home() -> None:
    """Remove this command's private Prefect folder (after its server has stopped)."""
    import shutil

    if _private_home is not None:
        shutil.rmtree(_private_home, ignore_errors=True)


def ensure_prefect_api() -> None:
    """Start Prefect's temporary server now and export its URL when no ``PREFECT_API_URL`` is set,
    so child processes (Dask workers, DVC's stage commands) use it instead of starting their own.

    The server dies with this process: on Linux the kernel sends it SIGTERM when the command dies,
    ``kill -9`` included (``PR_SET_PDEATHSIG``); an orderly exit stops it as before."""
    from prefect.settings import PREFECT_API_URL

    if os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value():  # a server of the user's, or a test harness's
        return
    from prefect.server.api import server as server_module

    die_with_us = _die_with_this_process()
    if die_with_us is not None:  # the module's own Popen, for this start only
        server_module.subprocess = SimpleNamespace(
            **{**vars(subprocess), "Popen": functools.partial(subprocess.Popen, preexec_fn=die_with_us)})
    try:
        server = server_module.SubprocessASGIServer()
        server.start()
    finally:
        server_module.subprocess = subprocess
    os.environ["PREFECT_API_URL"] = server.api_url


def _die_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when this process dies, or None off
    Linux or off the main thread (the signal follows the thread that started the child)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()
    pr_set_pdeathsig = 1

    def die_with_parent() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(0)

    return die_with_parent


# ---- user errors: one clean line, no traceback on the console ------------------------------------

_FAILED_STATE = re.compile(r"Finished in state Failed\('(?:Task|Flow) run encountered an exception:? (\w+):")


def _subclass_names(cls: type) -> set[str]:
    """The names of ``cls`` and of every subclass imported so far."""
    names, todo = set(), [cls]
    while todo:
        cls = todo.pop()
        if cls.__name__ not in names:
            names.add(cls.__name__)
            todo.extend(cls.__subclasses__())
    return names


class ConsoleFilter(logging.Filter):
    """On console handlers: drops Prefect's report of a user error (the traceback Prefect's flow and
    task engines log with ``exc_info``, and the ``Finished in state Failed(...)`` line naming it),
    unless verbose. The API handler is left alone, so the Prefect run log keeps everything.
    Remembers the last user error it saw, so the CLI does not print that traceback twice."""

    def __init__(self):
        super().__init__()
        self.last_seen: BaseException | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if exc is not None:
            if not isinstance(exc, user_error_class()):
                return True  # a bug: keep its traceback
            self.last_seen = exc
            return verbose()
        if verbose() or not isinstance(record.msg, str) or "Finished in state Failed" not in record.msg:
            return True
        match = _FAILED_STATE.search(record.getMessage())
        return match is None or match.group(1) not in _subclass_names(user_error_class())


CONSOLE_FILTER = ConsoleFilter()


def filter_console_logs() -> None:
    """Add ``CONSOLE_FILTER`` to every console handler Prefect's logging set up (idempotent)."""
    from prefect.logging.handlers import APILogHandler

    loggers = [logging.getLogger()] + [logger for name, logger in list(logging.root.manager.loggerDict.items())
                                       if name.startswith("prefect") and isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler, APILogHandler) and CONSOLE_FILTER not in handler.filters:
                handler.addFilter(CONSOLE_FILTER)
