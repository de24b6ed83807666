"""``flows.serving.serve_deployment``: stopping serve stops the flow runs it started, children included.

Against a real ``prefect server start`` (its own PREFECT_HOME under tmp_path), serve runs in a
subprocess, as ``exitflow serve`` does. The served flow starts a child (``sleep``), as a flow run
starting Dask or DataLoader workers does, then sleeps. With plain ``flow.serve`` that child outlives
SIGTERM, and SIGINT or SIGHUP leave the run itself going, Running in the API.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

SERVED = '''\
import os, subprocess, sys, time
from pathlib import Path
from prefect import flow
from flows.serving import serve_deployment

@flow(name="sleeper")
def sleeper(pid_file: str):
    child = subprocess.Popen(["sleep", "300"])
    Path(pid_file + ".tmp").write_text(f"{os.getpid()} {child.pid}")
    os.replace(pid_file + ".tmp", pid_file)
    while True:
        time.sleep(300)

if __name__ == "__main__":
    serve_deployment(sleeper, name=sys.argv[1], cron="0 0 1 1 *", parameters={"pid_file": sys.argv[2]})
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for PID 1, which may never reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def default_stop_signals() -> None:
    """In the serve child: SIGINT and SIGHUP at their defaults. A test run started in the
    background (`cmd &`, `nohup`) inherits them ignored, and serve rightly keeps an ignored
    signal ignored, which is not what this test is about."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Test cleanup: SIGTERM the process group ``proc`` leads, SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """``prefect server start`` on a free port with its own PREFECT_HOME; yields its env."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PYTHONPATH": str(ROOT)}
    log = open(home / "server.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start",
                               "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prefect server not healthy after 120 s"
            time.sleep(0.5)
        yield env
    finally:
        stop_group(server)
        log.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_stopping_serve_stops_its_flow_runs_and_their_children(prefect_server, tmp_path, sig):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = f"test-{sig.name.lower()}"
    pid_file = tmp_path / "pids"
    (tmp_path / "served.py").write_text(SERVED)
    env = {**prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "served.py", name, str(pid_file)], cwd=tmp_path, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=default_stop_signals)
    pids: list[int] = []

    def wait_for(what, condition, timeout):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what} (serve log:)\n{(tmp_path / 'serve.log').read_text()}"
            time.sleep(0.2)

    try:
        with temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}), \
                get_client(sync_client=True) as client:
            def deployment():
                try:
                    return client.read_deployment_by_name(f"sleeper/{name}")
                except ObjectNotFound:  # not registered yet
                    assert serve.poll() is None, "serve exited"
                    return None

            wait_for("deployment registered", deployment, 60)
            limit = deployment()  # it never overlaps itself: one run at a time, the next one waits
            assert (limit.global_concurrency_limit.limit, limit.concurrency_options.collision_strategy) == (1, "ENQUEUE")
            flow_run = client.create_flow_run_from_deployment(deployment().id)
            wait_for("flow run started", pid_file.exists, 60)
            pids = [int(p) for p in pid_file.read_text().split()]  # the flow-run process, its child
            assert all(running(p) for p in pids)
            assert client.read_flow_run(flow_run.id).state.type == StateType.RUNNING

            def still_running() -> list[str]:
                return [what for what, alive in (("serve", serve.poll() is None), ("the flow run", running(pids[0])),
                                                 ("its child", running(pids[1]))) if alive]

            serve.send_signal(sig)
            deadline = time.monotonic() + 15
            while (left := still_running()) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not left, f"15 s after {sig.name}, still running: {left}\n{(tmp_path / 'serve.log').read_text()}"
            state = client.read_flow_run(flow_run.id).state
            assert state.type in (StateType.CANCELLED, StateType.CRASHED), state
    finally:
        stop_group(serve)
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
