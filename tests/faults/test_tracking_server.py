"""A tracking server that goes away in the middle of a run: one ``error:`` line naming the URI,
exit 3, the finished steps kept on disk; with the server back, the re-run continues from the cache.

The server is MLflow's own tracking server application (``mlflow.server.app``, what ``mlflow
server`` serves) on a free loopback port, hosted in a thread of the test: ``mlflow server`` takes
about 30 s to start on a loaded 2-core machine, which would not keep the test under a minute. It
answers one request per connection, so stopping it refuses every later request at once.
"""

import os
import subprocess
import sys
import threading
import time

import pytest

from tests.faults.conftest import (
    ROOT,
    TRAIN,
    error_lines,
    exitflow_process,
    folder_hashes,
    prepare,
)

pytestmark = pytest.mark.timeout(300)  # a hung command fails, not the suite


class TrackingServer:
    """MLflow's tracking server app on 127.0.0.1 (a free port, or ``port``), in a thread."""

    def __init__(self, port: int = 0):
        from mlflow.server import app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class OneRequestPerConnection(WSGIRequestHandler):
            protocol_version = "HTTP/1.0"

        self.server = make_server("127.0.0.1", port, app, threaded=True, request_handler=OneRequestPerConnection)
        self.uri = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def server_store(tmp_path, monkeypatch):
    """Where the test's tracking server keeps runs (read by the app at its first request)."""
    monkeypatch.setenv("_MLFLOW_SERVER_FILE_STORE", f"sqlite:///{tmp_path}/server/mlflow.db")
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", str(tmp_path / "server" / "mlartifacts"))
    monkeypatch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "false")
    (tmp_path / "server").mkdir()


def wait_for(path, process, timeout_s: float = 120) -> None:
    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() - start < timeout_s, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.integration
def test_the_tracking_server_goes_away_after_training(project, prefect_harness, server_store):
    from prefect.settings import PREFECT_API_URL

    started = time.monotonic()
    server = TrackingServer()
    env = {"MLFLOW_TRACKING_URI": server.uri}
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value(), **env}
    environ.pop("EXITFLOW_VERBOSE", None)
    command = subprocess.Popen([sys.executable, "-m", "flows.cli", "evaluate", "--strategy", "joint"],
                               cwd=prepare(project), env=environ, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(project / TRAIN / ".inputs-key", command)  # the training step is done and stamped
        server.stop()
        output, _ = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 3, output
    assert "Traceback" not in output, output
    assert error_lines(output) == [(f"error: MLflow tracking server {server.uri} stopped answering during the run; the "
                                    "finished steps are kept on disk: restart the server and re-run to continue from "
                                    "them (the run is then marked FAILED)")], output
    [unfinished] = (project / ".exitflow-unfinished-runs").read_text().splitlines()
    assert unfinished.startswith(f"{server.uri} ")
    kept = folder_hashes(project / TRAIN)
    assert "checkpoint/exits.safetensors" in kept

    port = int(server.uri.rsplit(":", 1)[1])
    server = TrackingServer(port)  # back, on the same port and store
    try:
        again = exitflow_process(project, "evaluate", "--strategy", "joint", **env)
        from mlflow import MlflowClient

        failed = MlflowClient(tracking_uri=server.uri).get_run(unfinished.split(" ")[1])
    finally:
        server.stop()
    assert failed.info.status == "FAILED" and failed.info.run_name == "evaluate-joint"
    assert f"MLflow run {failed.info.run_id} on {server.uri}, left running when the server went away, is now marked FAILED" in again.stdout
    assert not (project / ".exitflow-unfinished-runs").exists()
    assert again.returncode == 0, again.stdout
    assert "Task run 'train_multi_exit" in again.stdout and "Finished in state Cached" in again.stdout
    assert folder_hashes(project / TRAIN) == kept  # continued from the kept training step
    assert (project / "artifacts/sst2/seed-42/evaluate/joint/metrics.json").exists()
    print(f"took {time.monotonic() - started:.0f} s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_metric_logger_names_a_server_that_does_not_answer(monkeypatch):
    """The mechanism alone, in seconds: a refused port, MLflow's retries bounded as ``use_experiment`` bounds them."""
    import mlflow

    from flows.tracking import HTTP_RETRIES
    from models.errors import EnvironmentFault, TrackingServerGone
    from tasks.metric_logger import MlflowLogger

    for key, value in HTTP_RETRIES.items():
        monkeypatch.setenv(key, value)
    uri, before = f"http://127.0.0.1:{free_port()}", mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    start = time.monotonic()
    try:
        with pytest.raises(TrackingServerGone) as err:
            MlflowLogger("0" * 32).log_metrics({"loss": 1.0}, step=1)
    finally:
        mlflow.set_tracking_uri(before)
    assert isinstance(err.value, EnvironmentFault)
    assert str(err.value).startswith(f"MLflow tracking server {uri} stopped answering during the run;")
    assert time.monotonic() - start < 20  # MLflow's defaults would retry for minutes
