"""The command line as a user meets it: clean user errors, and termination by signal.

The CLI runs in a subprocess, as a user runs it, because Prefect's console handler writes to
the process's real stderr (an in-process runner would not see it).
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "EXITFLOW_VERBOSE")}
    env["PYTHONPATH"] = str(ROOT)
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"  # a loaded 2-core machine starts it slowly
    env.update(extra)
    return env


def kill_all(processes, psutil) -> None:
    """Test cleanup: kill whatever is still running."""
    for p in processes:
        try:
            p.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass


def bad_data_project(root: Path) -> Path:
    """A project whose dev split has a label outside the task's classes: a DataError inside a task."""
    from tests.flows.conftest import make_sst2

    make_sst2(root / "src")
    (root / "src/sst2/dev.tsv").write_text("sentence\tlabel\nthe movie was good\t7\n")
    (root / "params.yaml").write_text(yaml.safe_dump({"data": {"source_dir": "src", "tasks": ["sst2"]}}))
    return root / "params.yaml"


@pytest.mark.integration
def test_user_error_inside_a_flow_prints_one_clean_line_and_verbose_shows_the_traceback(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    params = bad_data_project(tmp_path)
    env = cli_env(PREFECT_API_URL=PREFECT_API_URL.value())  # the harness's server: no temporary server per call

    def exitflow(*args):
        return subprocess.run([sys.executable, "-m", "flows.cli", *args, "prepare", "--params", str(params)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    quiet = exitflow()
    output = quiet.stdout + quiet.stderr
    assert quiet.returncode == 2, output
    assert "Traceback" not in output and "Finished in state Failed" not in output, output
    assert f"error: {tmp_path}/src/sst2/dev.tsv:2: label 7 is outside 0..1" in output
    assert output.count("label 7 is outside") == 1, output  # said once, by our line only

    verbose = exitflow("--verbose")
    output = verbose.stdout + verbose.stderr
    assert verbose.returncode == 2, output
    assert "Traceback" in output and "tasks.data.DataError" in output, output
    assert "error: " in output


def test_user_error_before_any_flow_is_clean_and_verbose_by_environment(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    params = bad_data_project(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "--params", str(params), "--set", "train.epochs=0"], env={"EXITFLOW_VERBOSE": ""})
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "error: params.yaml: train.epochs" in result.output
    result = runner.invoke(app, ["prepare", "--params", str(params), "--set", "train.epochs=0"], env={"EXITFLOW_VERBOSE": "1"})
    assert result.exit_code == 2
    assert "Traceback" in result.output and "ConfigError" in result.output


def test_console_filter_drops_user_errors_only(monkeypatch):
    from flows.runtime import ConsoleFilter
    from tasks.data import DataError

    monkeypatch.delenv("EXITFLOW_VERBOSE", raising=False)

    def record(msg, exc=None, level=logging.ERROR):
        exc_info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("prefect.flow_runs", level, __file__, 1, msg, None, exc_info)

    quiet = ConsoleFilter()
    user, bug = DataError("bad label"), KeyError("a bug")
    assert not quiet.filter(record("Encountered exception during execution", user))
    assert quiet.last_seen is user
    assert quiet.filter(record("Encountered exception during execution", bug))  # a bug keeps its traceback
    assert not quiet.filter(record("Finished in state Failed('Task run encountered an exception DataError: bad label')"))
    assert not quiet.filter(record("Finished in state Failed('Flow run encountered an exception: DataError: x')", level=logging.INFO))
    assert quiet.filter(record("Finished in state Failed('Flow run encountered an exception: KeyError: x')"))
    assert quiet.filter(record("Beginning flow run", level=logging.INFO))
    # a plain ValueError or FileNotFoundError is a bug too: its traceback and its failed state stay
    for plain in (ValueError("a bug"), FileNotFoundError("a bug")):
        assert quiet.filter(record("Encountered exception during execution", plain))
    assert quiet.last_seen is user
    assert quiet.filter(record("Finished in state Failed('Task run encountered an exception ValueError: x')"))
    assert quiet.filter(record("Finished in state Failed('Flow run encountered an exception: FileNotFoundError: x')"))
    monkeypatch.setenv("EXITFLOW_VERBOSE", "1")
    assert quiet.filter(record("Encountered exception during execution", user))


def test_every_user_error_is_an_exitflow_error_and_keeps_its_old_base():
    """The CLI catches ``ExitflowError`` only, so each user-error class must derive from it; callers
    and tests that catch the old base (ValueError, RuntimeError, FileNotFoundError) still do."""
    from models.errors import CheckpointError, ExitflowError, MissingCheckpointError, ModelSpecError
    from models.generation import GenerationError
    from models.hashee import HashTableError
    from models.training import NonFiniteLossError
    from tasks.backbones import BackboneError
    from config.params import ConfigError
    from tasks.consistentee import MemorizedLayerError
    from tasks.data import DataError
    from tasks.difficulty import DifficultyDataError
    from tasks.versioning import VersioningError

    old_bases = {ConfigError: ValueError, DataError: ValueError, BackboneError: ValueError, VersioningError: RuntimeError,
                 HashTableError: ValueError, NonFiniteLossError: RuntimeError, MemorizedLayerError: ValueError,
                 DifficultyDataError: ValueError, GenerationError: ValueError, ModelSpecError: ValueError,
                 CheckpointError: ValueError, MissingCheckpointError: FileNotFoundError}
    for cls, base in old_bases.items():
        assert issubclass(cls, ExitflowError) and issubclass(cls, base), cls
    assert not issubclass(ExitflowError, (ValueError, OSError, RuntimeError))  # a plain ValueError is not one


def invoke(args, **env):
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, args, env={"EXITFLOW_VERBOSE": "", **env})


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "error:" in line]


def test_missing_params_file_is_one_error_line_and_exit_2(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    result = invoke(["report", "--params", str(missing)])
    assert result.exit_code == 2, result.output
    assert error_lines(result.output) == [f"error: params file {missing} not found; run from the repository or pass --params"]
    assert "Traceback" not in result.output


def test_bad_set_value_is_one_error_line_and_exit_2(tmp_path):
    params = bad_data_project(tmp_path)
    result = invoke(["report", "--params", str(params), "--set", "train.epochs=zero"])
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert line.startswith("error: params.yaml: train.epochs: ") and "'zero'" in line
    assert "Traceback" not in result.output


def test_user_error_subclass_raised_in_a_command_is_one_line(tmp_path, monkeypatch):
    """A checkpoint error raised from inside a command (here through load_params) takes the user-error path."""
    from models.errors import MissingCheckpointError

    def missing_checkpoint(*args, **kwargs):
        raise MissingCheckpointError("ckpt/exitflow.json: no exitflow checkpoint; run `exitflow leco` first")

    monkeypatch.setattr("config.params.load_params", missing_checkpoint)
    result = invoke(["report", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2, result.output
    assert error_lines(result.output) == ["error: ckpt/exitflow.json: no exitflow checkpoint; run `exitflow leco` first"]


@pytest.mark.parametrize("bug", [ValueError, FileNotFoundError, KeyError])
def test_a_bug_inside_a_command_is_not_swallowed(tmp_path, monkeypatch, bug):
    """A plain ValueError / FileNotFoundError / KeyError is a bug: the CLI lets it propagate (exit 1
    from Python, not the user-error exit 2) and prints no ``error:`` line for it."""

    def broken(*args, **kwargs):
        raise bug("an internal invariant broke")

    monkeypatch.setattr("config.params.load_params", broken)
    result = invoke(["report", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1, result.output
    assert type(result.exception) is bug
    assert error_lines(result.output) == []


BROKEN = '''
import config.params

def broken(*args, **kwargs):
    raise ValueError("an internal invariant broke")

config.params.load_params = broken

from flows.cli import app

app(prog_name="exitflow", args=["report", "--params", "params.yaml"])
'''


def test_a_bug_keeps_its_traceback_on_the_console(tmp_path):
    """As a user runs it: a plain ValueError raised inside a command ends the process non-zero with
    Python's traceback on stderr, not as a one-line ``error:``."""
    script = tmp_path / "broken.py"
    script.write_text(BROKEN)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith("ValueError: an internal invariant broke"), proc.stderr
    assert "error: an internal invariant broke" not in proc.stdout + proc.stderr


SLEEPY = '''
import os
import time

from prefect import flow

from flows.cli import app


@flow
def sleepy():
    print("flow started", flush=True)
    time.sleep(float(os.environ.get("SLEEP_S", "120")))


@app.command("sleepy")
def sleepy_command():
    sleepy()
    print("flow done", flush=True)
    time.sleep(float(os.environ.get("THEN_S", "0")))
    for i in range(100):
        print(f"result line {i}", flush=True)


app(prog_name="exitflow", args=["sleepy"])
'''


# ``exitflow compare --sequential`` with one slow unit: the grid's own flow and unit task, the method stubbed
SLOW_GRID = '''
import time
from types import SimpleNamespace

import flows.compare_grid as grid
from config.params import load_params
from flows.cli import app


def slow(ctx):
    print("flow started", flush=True)
    time.sleep(120)


grid.comparison_variants = lambda params: {"slow": SimpleNamespace(run=slow)}
grid.RunContext = SimpleNamespace(from_params=lambda params: None)


@app.command("slowgrid")
def slowgrid_command():
    open("params.yaml", "w").write("seed: 7\\n")
    grid.run_grid([(load_params("params.yaml"), "slow")], threads=1, inline=True)


app(prog_name="exitflow", args=["slowgrid"])
'''


@pytest.mark.integration
@pytest.mark.timeout(150)
@pytest.mark.parametrize("script_text", [SLEEPY, SLOW_GRID], ids=["flow", "sequential-compare-unit"])
def test_sigterm_stops_the_command_and_its_temporary_server_within_seconds(tmp_path, script_text):
    """Through the same entry point as ``exitflow``; the flow starts Prefect's temporary server. A
    sequential compare unit runs in the main thread, so the signal stops it too (in a worker thread
    the unit ran on to its end while the main thread waited)."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "sleepy.py"
    script.write_text(script_text)
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect-home"))  # its own server database
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, started = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "flow started" in line:
                started.set()

    threading.Thread(target=read, daemon=True).start()
    children = []
    try:
        assert started.wait(120), "".join(lines)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("uvicorn" in " ".join(c.cmdline()) for c in children), "no temporary server started"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"left running: {[' '.join(p.cmdline()) for p in alive]}"
        assert code == 128 + signal.SIGTERM, "".join(lines)
        assert elapsed < 10
        assert "terminated (signal 15)" in "".join(lines)
    finally:
        kill_all([proc, *children], psutil)


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_a_closed_output_pipe_does_not_leave_the_temporary_server_running(tmp_path):
    """``exitflow prepare 2>&1 | head -5``: the command's last output hit the closed pipe, typer exited,
    and Prefect's own stop logged first: its console handler turned the broken pipe into SystemExit
    before the server was stopped, so the server outlived the command."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "sleepy.py"
    script.write_text(SLEEPY)
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect-home"), SLEEP_S="0", THEN_S="2")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    children, output = [], b""
    try:
        while b"flow done" not in output:
            line = proc.stdout.readline()
            assert line, output.decode()
            output += line
            children = children or [c for c in psutil.Process(proc.pid).children(recursive=True)
                                    if "uvicorn" in " ".join(c.cmdline())]
        assert children, "no temporary server started"
        proc.stdout.close()  # the reader goes away before the command prints its result, like `| head`
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"left running: {[' '.join(p.cmdline()) for p in alive]}"
    finally:
        kill_all([proc, *children], psutil)


@pytest.mark.parametrize("args, key", [
    (["--budget", "abc"], "compare.budget: "),
    (["--budget", ""], "compare.budget: "),
    (["--profile", "nightly"], "unknown profile 'nightly'"),
    (["--set", "compare.seeds=[42, 42]"], "compare.seeds: "),
    (["--set", "compare.lr_grid=[]"], "compare.lr_grid: "),
])
def test_compare_bad_input_fails_before_any_unit_naming_the_key(args, key, monkeypatch):
    import flows.compare

    def no_flow(*a, **k):
        raise AssertionError("the flow started")

    monkeypatch.setattr(flows.compare, "compare_flow", no_flow)
    result = invoke(["compare", "--params", str(Path(__file__).resolve().parents[2] / "params.yaml"), *args])
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert line.startswith("error: params.yaml: ") and key in line and "Traceback" not in result.output
