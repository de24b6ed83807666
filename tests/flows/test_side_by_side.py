"""Commands side by side on one machine: real processes, through the ``exitflow`` entry point.

Two commands that need one output folder: the second waits for the first, then is served from
the cache (the step ran once); with ``--no-wait`` it fails at once, naming the folder and the
holder. Two commands started together, each with its own temporary Prefect server, both succeed.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flows.test_cli import cli_env

pytestmark = pytest.mark.integration

ONE_STEP = '''
import os
import time
from pathlib import Path

from prefect import flow, task

from flows.cli import _run, app
from tasks.caching import ARTIFACT_CACHE, run_cached
from tasks.io import write_result


@task(cache_policy=ARTIFACT_CACHE, persist_result=True)
def slow_step(out_dir: Path, text: str) -> dict:
    with open(out_dir.parent / "runs.txt", "a") as runs:  # one line per time the step really runs
        runs.write(f"{os.getpid()}\\n")
    release, deadline = out_dir.parent / "release", time.monotonic() + float(os.environ["STEP_S"])
    while os.environ["STEP_S"] != "0" and not release.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # holds the folder until the test releases it
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "out.txt").write_text(text)
    return write_result(out_dir, {"text": text})


@flow
def one_step(out_dir: str) -> dict:
    return run_cached(slow_step, out_dir=Path(out_dir), text="hello")


@app.command("step")
def step(out_dir: str):
    print("result", _run(one_step, out_dir)["text"], flush=True)


app(prog_name="exitflow")
'''


@pytest.fixture()
def step_script(tmp_path, prefect_harness):
    """``python step.py [--no-wait] step OUT``, on the session's Prefect server (no temporary one)."""
    from prefect.settings import PREFECT_API_URL

    script = tmp_path / "step.py"
    script.write_text(ONE_STEP)
    env = cli_env(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"))

    def start(*args, step_s=0.0):
        return subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, text=True,
                                env={**env, "STEP_S": str(step_s)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return start


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_a_second_run_of_a_step_waits_for_the_first_then_is_served_from_the_cache(tmp_path, step_script):
    out = tmp_path / "artifacts" / "step"
    first = step_script("step", str(out), step_s=240)
    second = None
    try:
        wait_for(tmp_path / "artifacts" / "runs.txt", first)  # the first is inside the step, holding the folder
        second = step_script("step", str(out))
        err2 = ""
        while not err2.endswith("\n") or not err2.splitlines()[-1].startswith("waiting for"):
            line = second.stderr.readline()
            assert line, err2
            err2 += line
        (tmp_path / "artifacts" / "release").touch()
        out1, err1 = first.communicate(timeout=120)
        out2, rest = second.communicate(timeout=120)
        err2 += rest
        assert first.returncode == 0 and second.returncode == 0, err1 + err2
        assert out1.splitlines()[-1] == out2.splitlines()[-1] == "result hello"
        assert (tmp_path / "artifacts" / "runs.txt").read_text() == f"{first.pid}\n"  # the step ran once
        waiting = [line for line in err2.splitlines() if line.startswith("waiting for")]
        assert waiting == [(f"waiting for {out}: it is being written by pid {first.pid} "
                            f"(python step.py step {out}), since {waiting[0].split('since ')[-1]}")]
        assert "Traceback" not in err1 + err2
        assert not list(out.parent.glob("*.exitflow-lock"))  # released and removed
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.timeout(300)
def test_no_wait_fails_fast_with_one_line_naming_the_folder_and_the_holder(tmp_path, step_script):
    out = tmp_path / "artifacts" / "step"
    first = step_script("step", str(out), step_s=60)
    try:
        wait_for(tmp_path / "artifacts" / "runs.txt", first)
        second = step_script("--no-wait", "step", str(out))
        _, err = second.communicate(timeout=120)
        assert second.returncode == 75, err
        assert "Traceback" not in err and "Finished in state Failed" not in err, err
        assert [line for line in err.splitlines() if line.startswith("error:")] == [(
            f"error: {out} is being written by pid {first.pid} (python step.py step {out}), since "
            f"{err.split('since ')[-1].split(';')[0]}; wait for it to finish, or run without --no-wait "
            "(EXITFLOW_NO_WAIT) to wait")]
        assert first.poll() is None  # the holder goes on
    finally:
        first.kill()
        first.communicate()


@pytest.mark.timeout(400)
def test_two_commands_started_together_both_start_their_server_and_succeed(project):
    """Two ``exitflow prepare`` at once, each with its own temporary Prefect server (no
    ``PREFECT_API_URL``): before, they shared one server database and one failed its migration."""
    env = cli_env(PREFECT_HOME=str(project / "prefect-home"))  # one home for both, as for a user
    cmd = [sys.executable, "-m", "flows.cli", "prepare", "--params", str(project / "params.yaml")]
    procs = [subprocess.Popen(cmd, cwd=project, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(2)]
    try:
        outputs = [proc.communicate(timeout=360)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output
        assert "sst2: train 48, dev 16, test 16" in output
        assert not [line for line in output.splitlines() if "Traceback" in line or "ERROR" in line], output
    assert not (project / "prefect-home" / "prefect.db").exists()  # no server database shared in the Prefect home
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"exitflow-prefect-{procs[0].pid}-*"))  # removed
