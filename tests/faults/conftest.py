"""Faults done for real on tiny runs: the fixtures of ``tests/flows`` (a tiny backbone, tiny data,
a project folder, one Prefect test server per session), and the CLI as a user meets it."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tests.flows.conftest import prefect_harness, project  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
TRAIN = "artifacts/sst2/seed-42/train/joint"  # the tiny project's joint model (`exitflow train --strategy joint`)


def exitflow(*args: str, env: dict | None = None):
    """``exitflow *args`` in this process (typer's CliRunner), tracebacks off: its ``Result``."""
    from flows.cli import app

    return CliRunner().invoke(app, list(args), env={"EXITFLOW_VERBOSE": "", **(env or {})})


def exitflow_process(root: Path, *args: str, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """``exitflow *args`` in a subprocess in the project at ``root``, on the session's Prefect test server (no
    temporary server per call); stdout and stderr together in ``.stdout``."""
    from prefect.settings import PREFECT_API_URL

    environ = {k: v for k, v in os.environ.items() if k not in ("EXITFLOW_VERBOSE", "EXITFLOW_VERIFY")}
    environ.update(PYTHONPATH=str(ROOT), PREFECT_API_URL=PREFECT_API_URL.value(), **env)
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=root, env=environ, text=True, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


def error_lines(output: str) -> list[str]:
    """The ``error:`` lines of a command's output."""
    return [line for line in output.splitlines() if line.startswith("error:")]


def folder_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``folder``, stamps and hidden files included."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def prepare(root: Path) -> Path:
    """Prepare the tiny project's data in this process (what `exitflow prepare` writes); ``root``."""
    from config.params import load_params
    from tasks.data import prepare_task

    params = load_params(root / "params.yaml")
    prepare_task("sst2", params.data, root / "src", root / "data")
    return root
