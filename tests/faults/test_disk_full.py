"""A full disk during a save: one ``error:`` line naming the folder and the bytes needed, exit 3,
nothing half-written; once there is space, the re-run ends byte-identical to an undisturbed run."""

import errno
import shutil
import subprocess

import pytest

from models.errors import DiskFullError, EnvironmentFault, ExitflowError
from tasks.io import atomic_dir, atomic_write_bytes
from tests.faults.conftest import (
    TRAIN,
    error_lines,
    exitflow_process,
    folder_hashes,
    prepare,
)

pytestmark = pytest.mark.timeout(300)  # a hung command fails, not the suite


class FullFile:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_write_hook_that_fills_the_disk(tmp_path, monkeypatch):
    import tasks.io

    target = tmp_path / "out" / "weights.bin"
    atomic_write_bytes(target, b"old")
    real_fdopen = tasks.io.os.fdopen
    monkeypatch.setattr(tasks.io.os, "fdopen", lambda fd, mode: FullFile(real_fdopen(fd, mode)))
    with pytest.raises(DiskFullError) as err:
        atomic_write_bytes(target, b"x" * 2_500_000)
    assert isinstance(err.value, EnvironmentFault) and not isinstance(err.value, ExitflowError)
    assert err.value.errno == errno.ENOSPC
    assert str(err.value).startswith(f"no space left on the device writing to {target.parent} (2.5 MB needed, ")
    assert str(err.value).endswith("MB free); nothing half-written was left: free some space and re-run (finished steps are kept)")
    assert sorted(p.name for p in target.parent.iterdir()) == ["weights.bin"] and target.read_bytes() == b"old"


def test_a_folder_writer_that_fills_the_disk(tmp_path):
    target = tmp_path / "checkpoint"
    with atomic_dir(target) as tmp:
        (tmp / "a.bin").write_bytes(b"old")
    with pytest.raises(DiskFullError, match=f"writing to {tmp_path} \\(\\d"), atomic_dir(target) as tmp:
        (tmp / "a.bin").write_bytes(b"half")
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")  # safetensors' words
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"] and (target / "a.bin").read_bytes() == b"old"


@pytest.fixture()
def small_disk(project):
    """A 64 kB tmpfs where the tiny run writes its joint model (root only; skipped elsewhere)."""
    folder = project / TRAIN
    folder.parent.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder.parent)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder.parent)], check=False)


@pytest.mark.integration
def test_a_full_disk_during_training(project, small_disk, prefect_harness):
    reference = project.parent / "reference"  # the same project, undisturbed
    shutil.copytree(project, reference, ignore=shutil.ignore_patterns("artifacts"))
    done = exitflow_process(prepare(reference), "train", "--strategy", "joint")
    assert done.returncode == 0, done.stdout

    full = exitflow_process(prepare(project), "train", "--strategy", "joint")
    assert full.returncode == 3, full.stdout
    assert "Traceback" not in full.stdout and "Errno 28] No space left" not in full.stdout, full.stdout
    [line] = error_lines(full.stdout)
    assert line.startswith(f"error: no space left on the device writing to {small_disk}/"), line
    print(line)
    assert " MB needed, " in line and "free some space and re-run" in line
    leftovers = [p for p in small_disk.parent.rglob("*") if p.name.startswith(".") or p.name == "checkpoint"]
    assert leftovers == [], leftovers  # no temporary file, no half checkpoint, no stamp

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk.parent)], check=True)
    again = exitflow_process(project, "train", "--strategy", "joint")
    assert again.returncode == 0, again.stdout
    assert folder_hashes(small_disk) == folder_hashes(reference / TRAIN)


@pytest.mark.parametrize(("fault", "code"), [(DiskFullError("no space left on the device writing to /x"), 3),
                                             (ExitflowError("params.yaml: bad"), 2)])
def test_the_cli_maps_environment_faults_to_exit_3_and_user_errors_to_2(fault, code, capsys, monkeypatch):
    import typer

    from flows.cli import _run

    monkeypatch.delenv("EXITFLOW_VERBOSE", raising=False)

    def command():
        raise fault

    with pytest.raises(typer.Exit) as done:
        _run(command)
    assert done.value.exit_code == code
    assert capsys.readouterr().err == f"error: {fault}\n"
