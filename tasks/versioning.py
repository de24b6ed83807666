"""DVC steps: snapshot ``data/`` (``data.dvc``), record pipeline outputs in ``dvc.lock``, push.

All are no-ops outside a DVC repository (e.g. in tests that run in a temp directory).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import task

from models.errors import ExitflowError
from tasks.failpoints import failpoint_during


class VersioningError(ExitflowError, RuntimeError):
    pass


# dvc.yaml stages the default pipeline (`exitflow run`) produces; `learnability` runs on demand
DEFAULT_STAGES = ("train", "evaluate", "hashee", "consistentee", "past_future_default", "report")


DVC_REPO_LOCK = (".dvc", "tmp", "lock")  # DVC's repository lock file, relative to the repository


def _holds_repo_lock(root: Path, pid: int) -> bool:
    """Whether process ``pid`` has taken DVC's repository lock (its pid is in ``DVC_REPO_LOCK``)."""
    try:
        return Path(root).joinpath(*DVC_REPO_LOCK).read_text().split() == [str(pid)]
    except OSError:
        return False


def _dvc(root: Path, *args: str) -> str:
    with subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=root, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        failpoint_during(f"dvc.{args[0]}", proc, lambda: _holds_repo_lock(root, proc.pid))
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise VersioningError(f"`dvc {' '.join(args)}` failed in {root}:\n{stderr.strip() or stdout.strip()}")
    return stdout


def is_dvc_repo(root: Path) -> bool:
    return (Path(root) / ".dvc").is_dir()


@task(name="snapshot_data", retries=1, retry_delay_seconds=5)
def snapshot_data(root: Path, data_dir: Path) -> str | None:
    """``dvc add data`` so ``data.dvc`` pins this exact snapshot; returns the .dvc path."""
    if not is_dvc_repo(root):
        return None
    _dvc(root, "add", "--quiet", str(Path(data_dir).relative_to(root)))
    return str(Path(data_dir).with_suffix(".dvc"))


@task(name="record_pipeline_outputs")
def record_pipeline_outputs(root: Path, stages: list[str] | None = None, push: bool = True) -> bool:
    """``dvc commit`` the given stages (default: every stage of the default pipeline, i.e. all
    but the on-demand ones), then ``dvc push`` to the default remote."""
    if not is_dvc_repo(root) or not (Path(root) / "dvc.yaml").exists():
        return False
    _dvc(root, "commit", "--force", "--quiet", *(stages if stages is not None else DEFAULT_STAGES))
    if push:
        _dvc(root, "push", "--quiet")
    return True
