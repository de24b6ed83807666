"""``tasks.locking``: one writer per output folder, across real processes, and a lock that no hash sees."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.io import tree_hash
from tasks.locking import LOCK_SUFFIX, FolderBusyError, folder_lock, lock_path

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from tasks.locking import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(folder: Path, seconds: float) -> subprocess.Popen:
    """A process holding ``folder``'s lock for ``seconds`` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_lock_file_sits_beside_the_folder_and_no_content_hash_sees_it(tmp_path):
    folder = tmp_path / "train" / "joint"
    assert lock_path(folder) == tmp_path / "train" / f".joint{LOCK_SUFFIX}"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w")
    before = tree_hash(tmp_path)
    lock_path(folder).write_text('{"pid": 1}')  # a stale one, left by a killed run
    assert tree_hash(tmp_path) == before  # the key of a downstream step reading the parent folder
    assert f"*{LOCK_SUFFIX}" in (ROOT / ".dvcignore").read_text().split()


def test_dvc_ignores_a_stale_lock_file(tmp_path):
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvcignore").write_text((ROOT / ".dvcignore").read_text())
    stale = lock_path(tmp_path / "artifacts" / "table")
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    check = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", str(stale.relative_to(tmp_path))],
                           check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_holder_is_recorded_while_held_and_the_file_is_gone_after(tmp_path):
    folder = tmp_path / "out"
    with folder_lock(folder) as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["command"] and holder["started"]
    assert not path.exists()


@pytest.mark.timeout(60)
def test_no_wait_fails_at_once_naming_the_folder_and_the_holder(tmp_path):
    folder = tmp_path / "out"
    holder = hold(folder, 30)
    try:
        start = time.monotonic()
        with pytest.raises(FolderBusyError) as err, folder_lock(folder, wait=False):
            pass
        assert time.monotonic() - start < 2
        assert str(folder) in str(err.value) and f"pid {holder.pid} (python -c" in str(err.value)
        assert err.value.exit_code == 75
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.timeout(60)
def test_a_waiter_says_once_who_holds_the_folder_and_goes_on_when_it_is_free(tmp_path, capfd):
    folder = tmp_path / "out"
    holder = hold(folder, 3)
    try:
        start = time.monotonic()
        with folder_lock(folder):
            waited = time.monotonic() - start
        assert waited > 1.5  # it waited for the holder's 3 s
        assert holder.wait(timeout=10) == 0
        lines = capfd.readouterr().err.splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"waiting for {folder}: it is being written by pid {holder.pid} (python -c ")
        assert ", since 20" in lines[0]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.timeout(60)
def test_a_lock_left_by_a_killed_process_is_taken_over_at_once(tmp_path):
    folder = tmp_path / "out"
    holder = hold(folder, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads(lock_path(folder).read_text())["pid"] == holder.pid  # left behind
    start = time.monotonic()
    with folder_lock(folder, wait=False) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()  # the record is the new holder's
    assert time.monotonic() - start < 2
