"""The real services, started the documented way (scripts/services.sh): an MLflow server with a
SQLite store and served artifacts, and a Prefect server; a tiny ``exitflow compare`` runs against
both, and its runs, registered model and champion alias are read back through the MLflow client."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.flows.test_compare import make_similarity  # noqa: F401  (the compare fixtures' data)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def services(tmp_path):
    """Both servers on free ports, stopped afterwards whatever happens."""
    state = tmp_path / "services"
    env = {**os.environ, "MLFLOW_PORT": str(free_port()), "PREFECT_PORT": str(free_port()),
           "EXITFLOW_BIN": str(Path(sys.executable).parent), "SERVICES_TIMEOUT_S": "180"}
    try:
        started = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "start", str(state)], env=env,
                                 capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stderr
        exports = dict(item.split("=", 1) for item in started.stdout.split()[1:])
        yield exports
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "stop", str(state)], env=env, timeout=60)


def test_compare_against_real_mlflow_and_prefect_servers(project, services):
    from mlflow import MlflowClient
    from mlflow.artifacts import list_artifacts

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["timing_batch_sizes"] = [4]
    params["compare"] = {"tasks": ["sst2"], "methods": ["joint"], "seeds": [0], "lr_grid": [1e-3], "static_layers": [1],
                         "timing_batch_size": 4, "workers": 2, "torch_threads": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, **services, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    run = subprocess.run([sys.executable, "-m", "flows.cli", "compare", "--params", str(project / "params.yaml")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    uri = services["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("exitflow-compare")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # served by the server, not a local path
    runs = client.search_runs([exp.experiment_id])
    names = {r.info.run_name for r in runs}
    assert {"compare-default", "sst2/joint/seed-0", "sst2/static-1/seed-0"} <= names
    cell = next(r for r in runs if r.info.run_name == "sst2/joint/seed-0")
    assert "cell.json" in [a.path for a in list_artifacts(run_id=cell.info.run_id, tracking_uri=uri)]
    version = client.get_model_version_by_alias("exitflow-default-sst2-joint", "champion")
    assert float(version.tags["dev_score"]) == pytest.approx(cell.data.metrics["full_depth_dev_quality"])
    # no local mlruns/mlartifacts: everything went through the server
    assert not (project / "mlruns").exists() and not (project / "mlartifacts").exists()

    # the flow run is recorded by the Prefect server
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def flow_runs():
        async with get_client() as prefect:
            return [(r.name, r.state_type.value) for r in await prefect.read_flow_runs()]

    import asyncio

    with temporary_settings({PREFECT_API_URL: services["PREFECT_API_URL"]}):
        states = asyncio.run(flow_runs())
    assert ("COMPLETED" in {s for _, s in states}) and len(states) >= 2  # compare + its grid subflow
