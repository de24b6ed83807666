"""kill -9 at five points of a run: the re-run completes and its outputs equal an undisturbed run's (integration).

Each case runs an ``exitflow`` command of a tiny project in a subprocess with a failpoint set
(``tasks.failpoints``), checks it died by SIGKILL, re-runs it without one and compares every
output (``data/``, ``artifacts/``, and ``dvc.lock`` where DVC recorded) with a reference project
that ran undisturbed in another folder: outputs are byte-identical across folders
(``tests/flows/test_reproducible.py``). Not compared: the token cache (``artifacts/cache``),
``timing.json`` files (wall clock) and ``_resume`` states (removed when a step finishes).

Every command runs in a session of its own, whose processes are all killed when it ends, and
talks to one Prefect server started for the module (a temporary server per command would cost
seconds each, and a killed command would orphan its own).
"""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tasks.io import process_alive
from tests.flows.conftest import make_backbone, make_sst2

ROOT = Path(__file__).resolve().parents[2]
RUN = "artifacts/sst2/seed-42"
TIMEOUT = 600  # seconds per command, on a loaded 2-core machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # a hung command fails, not the suite

REFERENCE = ("from flows import runtime\nfrom flows.pipeline import exitflow_stage\n"
             "exitflow_stage('prepare', 'params.yaml')\nexitflow_stage('train', 'params.yaml', 'joint')\n"
             "exitflow_stage('evaluate', 'params.yaml', 'joint')\n")
RECORD = ("from pathlib import Path\nfrom tasks.versioning import record_pipeline_outputs\n"
          "assert record_pipeline_outputs.fn(Path.cwd(), ['train', 'evaluate'], push=False)\n")
PYTHON = [sys.executable, "-c"]
CLI = [sys.executable, "-m", "flows.cli"]


def params(backbone: Path) -> dict:
    return {
        "seed": 42,
        "data": {"source_dir": "src", "tasks": ["sst2"]},
        "backbone": {"name": str(backbone), "attn_implementation": "eager", "max_length": 16},
        "train": {"task": "sst2", "epochs": 2, "batch_size": 8, "lr": 1e-3, "strategies": ["joint"]},
        "evaluate": {"sweep_points": 5, "timing_rows": 8, "timing_repeats": 1, "timing_batch_sizes": [1]},
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "test-kill", "registered_model": "tiny-kill"},
    }


def make_project(folder: Path, base: Path, dvc: bool = False) -> Path:
    """Source data and params; with ``dvc``, a DVC repository with the repository's train and
    evaluate stages (their code dependencies copied in)."""
    shutil.copytree(base / "src", folder / "src")
    (folder / "params.yaml").write_text(yaml.safe_dump(params(base / "backbone")))
    if not dvc:
        return folder
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": {s: stages[s] for s in ("train", "evaluate")}}))
    for code in ("models", "tasks", "config", "flows"):
        shutil.copytree(ROOT / code, folder / code, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=folder, check=True, timeout=TIMEOUT)
    return folder


def run(project: Path, command: list[str], server: dict, failpoint: str | None = None) -> subprocess.CompletedProcess:
    """``command`` in ``project`` (its own session: every process it leaves is killed after it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("EXITFLOW_FAILPOINT", "MLFLOW_TRACKING_URI")}
    env.update(server, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
               PREFECT_LOCAL_STORAGE_PATH=str(project / ".prefect-results"), **({"EXITFLOW_FAILPOINT": failpoint} if failpoint else {}))
    proc = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, out)


def output_hashes(project: Path) -> dict[str, str]:
    files = [p for d in ("data", "artifacts") for p in (project / d).rglob("*")
             if p.is_file() and not p.is_relative_to(project / "artifacts" / "cache")
             and p.name != "timing.json" and "_resume" not in p.parts]
    files += [project / "dvc.lock"] if (project / "dvc.lock").exists() else []
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One Prefect server for every command of the module: ``{PREFECT_API_URL, PREFECT_HOME}``."""
    home = tmp_path_factory.mktemp("prefect-home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the Prefect server did not start"
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5)
                break
            except OSError:
                time.sleep(1)
        yield {**env, "PREFECT_API_URL": url}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, server):
    """The undisturbed run: ``(base folder, project before DVC recorded, hashes after)``."""
    base = tmp_path_factory.mktemp("kill")
    make_backbone(base / "backbone")  # one backbone for every project: its path is a params value
    make_sst2(base / "src")
    ref = make_project(base / "reference", base, dvc=True)
    done = run(ref, PYTHON + [REFERENCE], server)
    assert done.returncode == 0, done.stdout
    shutil.copytree(ref, base / "before-record", symlinks=True)
    done = run(ref, PYTHON + [RECORD], server)
    assert done.returncode == 0, done.stdout
    hashes = output_hashes(ref)
    for f in ("data/sst2/train.parquet", f"{RUN}/train/joint/checkpoint/exits.safetensors", f"{RUN}/train/joint/result.json",
              f"{RUN}/evaluate/joint/metrics.json", f"{RUN}/evaluate/joint/result.json", "dvc.lock"):
        assert f in hashes  # the comparisons below would pass on empty folders
    return base, base / "before-record", hashes


def killed_in_prepare(project: Path) -> None:
    assert not (project / "data" / "sst2").exists()
    assert len(list((project / "data").glob(".sst2.*.tmp/*.parquet"))) == 2  # two splits written, then killed


def killed_mid_epoch(project: Path) -> None:
    import torch

    state = torch.load(project / RUN / "train/joint/_resume/state.pt", weights_only=False)
    assert (state["epoch"], state["global_step"]) == (1, 6)  # killed in epoch 2, after epoch 1's 6 batches
    assert not (project / RUN / "train/joint/checkpoint").exists()


def killed_in_checkpoint(project: Path) -> None:
    assert not (project / RUN / "train/joint/checkpoint").exists()
    assert list((project / RUN / "train/joint").glob(".checkpoint.*.tmp/exits.safetensors"))


def killed_in_evaluation(project: Path) -> None:
    folder = project / RUN / "evaluate/joint"
    assert (folder / "metrics.json").exists() and not (folder / "result.json").exists()


def killed_in_dvc_commit(project: Path) -> None:
    """dvc had taken its repository lock (the file names its pid; dvc is gone) and not written dvc.lock."""
    assert not process_alive(int((project / ".dvc" / "tmp" / "lock").read_text()))
    assert not (project / "dvc.lock").exists()


TRAIN, EVALUATE = CLI + ["train", "--strategy", "joint"], CLI + ["evaluate", "--strategy", "joint"]
TRAINED = ("data/", f"{RUN}/train/")
CASES = {  # name: (failpoint, command, starting state, what the kill left, the outputs compared)
    "mid-prepare": ("prepare.split:2", CLI + ["prepare"], "fresh", killed_in_prepare, ("data/",)),
    "mid-epoch": ("train.batch:9", TRAIN, "data", killed_mid_epoch, TRAINED),  # 6 batches an epoch: epoch 2's third
    "mid-checkpoint-write": ("checkpoint.write", TRAIN, "data", killed_in_checkpoint, TRAINED),
    "mid-evaluation": ("evaluate.write", EVALUATE, "data", killed_in_evaluation, ("data/", "artifacts/")),
    "mid-dvc-commit": ("dvc.commit", PYTHON + [RECORD], "before-record", killed_in_dvc_commit, ("data/", "artifacts/", "dvc.lock")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_run_completes_on_rerun_with_the_undisturbed_outputs(case, reference, server, tmp_path):
    base, before_record, expected = reference
    failpoint, command, start, check_killed, compared = CASES[case]
    if start == "before-record":
        project = tmp_path / "p"
        shutil.copytree(before_record, project, symlinks=True)
    else:
        project = make_project(tmp_path / "p", base)
        if start == "data":
            shutil.copytree(before_record / "data", project / "data")

    killed = run(project, command, server, failpoint)
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    check_killed(project)

    rerun = run(project, command, server)
    assert rerun.returncode == 0, rerun.stdout
    if case == "mid-epoch":
        assert "resuming sst2 training" in rerun.stdout and "epoch 1/2 finished earlier" in rerun.stdout
    got = output_hashes(project)
    expected = {f: h for f, h in expected.items() if f.startswith(compared)}
    assert sorted(got) == sorted(expected)
    assert [f for f in got if got[f] != expected[f]] == []


def test_a_killed_command_takes_its_temporary_prefect_server_along(tmp_path):
    """kill -9 of a command that started its own temporary Prefect server: the server goes too
    (``flows.runtime.ensure_prefect_api``; before, it kept running with nobody to stop it)."""
    make_backbone(tmp_path / "backbone")
    make_sst2(tmp_path / "src")
    project = make_project(tmp_path / "p", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "MLFLOW_TRACKING_URI"))}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", EXITFLOW_FAILPOINT="prepare.split:2",
               PREFECT_LOCAL_STORAGE_PATH=str(project / ".prefect-results"))
    log = tmp_path / "prepare.log"  # not a pipe: a surviving server would hold it open
    with open(log, "w") as output:
        proc = subprocess.Popen(CLI + ["prepare"], cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        proc.wait(timeout=TIMEOUT)
        assert proc.returncode == -signal.SIGKILL, log.read_text()
        deadline, left = time.monotonic() + 30, None
        while time.monotonic() < deadline and (left := session_processes(proc.pid)):
            time.sleep(0.5)
        assert not left, f"still running after the command was killed: {left}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def session_processes(session: int) -> list[str]:
    """The command lines of the live processes in ``session``."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(process.pid) == session and process_alive(process.pid):
                found.append(" ".join(process.info["cmdline"] or []))
        except OSError:
            continue
    return found
