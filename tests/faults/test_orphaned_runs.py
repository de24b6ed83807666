"""A command killed with SIGKILL cannot close its MLflow runs: the next command of the machine marks
them KILLED (``flows.tracking.close_orphaned_runs``), and leaves alone the runs of commands still running."""

import os
import signal
import subprocess
import sys

import mlflow
import psutil

from flows.tracking import OWNER_HOST, OWNER_PID, close_orphaned_runs, owner_tags
from tests.faults.conftest import ROOT

OPENS_RUNS = """
import sys, time, mlflow
from flows.tracking import owner_tags
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("orphans")
with mlflow.start_run(run_name="parent", tags=owner_tags()):
    with mlflow.start_run(run_name="child", nested=True):
        with mlflow.start_run(run_name="grandchild", nested=True):
            print("open", flush=True)
            time.sleep(600)
"""


def test_runs_of_a_killed_command_are_closed_and_running_ones_kept(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = subprocess.Popen([sys.executable, "-c", OPENS_RUNS, uri], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert command.stdout.readline().strip() == "open"
        os.kill(command.pid, signal.SIGKILL)
        command.wait(timeout=30)
    finally:
        command.kill()
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("orphans").experiment_id
    alive = client.create_run(experiment, run_name="still running", tags=owner_tags())  # this process: running
    reused_pid = client.create_run(experiment, run_name="pid reused", tags=owner_tags(),  # opened before this process
                                   start_time=int(psutil.Process().create_time() * 1000) - 60_000)
    elsewhere = client.create_run(experiment, run_name="other machine",
                                  tags={OWNER_HOST: "another-host", OWNER_PID: str(command.pid)})
    untagged = client.create_run(experiment, run_name="untagged")

    closed = close_orphaned_runs(uri)

    status = {r.info.run_name: r.info.status for r in client.search_runs([experiment])}
    assert status == {"parent": "KILLED", "child": "KILLED", "grandchild": "KILLED", "pid reused": "KILLED", "still running": "RUNNING",
                      "other machine": "RUNNING", "untagged": "RUNNING"}
    [parent] = client.search_runs([experiment], "attributes.run_name = 'parent'")
    assert sorted(closed) == sorted([parent.info.run_id, reused_pid.info.run_id])
    assert (f"MLflow run parent ({parent.info.run_id}), left running by process {command.pid} that ended without "
            "closing it, is now marked KILLED") in capsys.readouterr().err
    assert close_orphaned_runs(uri) == []  # once closed, never again
    assert {alive.info.run_id, elsewhere.info.run_id, untagged.info.run_id} <= {
        r.info.run_id for r in client.search_runs([experiment], "attributes.status = 'RUNNING'")}
