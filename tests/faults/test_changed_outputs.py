"""Checked cache hits: a step's outputs changed on disk are rebuilt (one line naming the file), or
refused with ``EXITFLOW_VERIFY=strict``; the record is byte-identical in any folder."""

import json

import pytest
from prefect import task

from models.errors import ExitflowError
from tasks.caching import ARTIFACT_CACHE, run_cached
from tasks.io import atomic_write_json, atomic_write_text
from tasks.output_hashes import (
    OUTPUT_HASHES,
    OutputsChangedError,
    changed_output,
    record_outputs,
)
from tests.faults.conftest import folder_hashes

pytestmark = pytest.mark.timeout(300)  # a hung command fails, not the suite

CALLS = []


@task(name="write_weights", cache_policy=ARTIFACT_CACHE, persist_result=True)
def write_weights(value: int, out_dir):
    CALLS.append(value)
    atomic_write_text(out_dir / "model" / "weights.bin", f"weights {value}")
    atomic_write_text(out_dir / "timing.json", f"{len(CALLS)} ms")  # wall clock: differs per run
    atomic_write_json(out_dir / "result.json", {"value": value})
    return {"value": value}


@pytest.fixture()
def verify(monkeypatch):
    CALLS.clear()
    monkeypatch.delenv("EXITFLOW_VERIFY", raising=False)
    return lambda mode: monkeypatch.setenv("EXITFLOW_VERIFY", mode)


def test_a_changed_output_is_rebuilt_with_one_line_naming_it(tmp_path, prefect_harness, verify, capsys):
    out = tmp_path / "out"
    run_cached(write_weights, out_dir=out, value=1)
    before = folder_hashes(out)
    assert (out / OUTPUT_HASHES).read_text().splitlines()[0].endswith("  model/weights.bin")
    run_cached(write_weights, out_dir=out, value=1)
    assert CALLS == [1]  # an unchanged hit is served

    (out / "model" / "weights.bin").write_bytes(b"\x00garbage")
    capsys.readouterr()
    assert run_cached(write_weights, out_dir=out, value=1) == {"value": 1}
    assert CALLS == [1, 1]  # rebuilt
    said = [line for line in capsys.readouterr().err.splitlines() if "since step" in line]  # not Prefect's warnings
    assert said == [
        f"{out}/model/weights.bin changed since step write_weights wrote it: rebuilding {out}"]
    after = folder_hashes(out)
    assert {k: v for k, v in after.items() if k != "timing.json"} == {k: v for k, v in before.items() if k != "timing.json"}

    (out / "model" / "weights.bin").unlink()
    run_cached(write_weights, out_dir=out, value=1)
    assert CALLS == [1, 1, 1] and "model/weights.bin is missing since" in capsys.readouterr().err
    (out / "timing.json").write_text("a slower machine")  # wall-clock files are not checked
    run_cached(write_weights, out_dir=out, value=1)
    assert CALLS == [1, 1, 1]


def test_strict_mode_refuses_and_says_what_to_do(tmp_path, prefect_harness, verify):
    out = tmp_path / "out"
    run_cached(write_weights, out_dir=out, value=1)
    (out / "result.json").write_text("{}")
    verify("strict")
    with pytest.raises(OutputsChangedError) as err:
        run_cached(write_weights, out_dir=out, value=1)
    assert isinstance(err.value, ExitflowError)
    assert str(err.value) == (f"{out}/result.json changed since step write_weights wrote it; restore it (`dvc checkout`) "
                              f"or delete {out} and re-run to rebuild it (EXITFLOW_VERIFY=strict)")
    assert CALLS == [1] and (out / "result.json").read_text() == "{}"  # refused: nothing touched
    verify("off")
    assert run_cached(write_weights, out_dir=out, value=1) == {"value": 1} and CALLS == [1]  # off: served as before
    verify("sometimes")
    with pytest.raises(ExitflowError, match="EXITFLOW_VERIFY='sometimes': choose one of rebuild, strict, off"):
        run_cached(write_weights, out_dir=out, value=1)


def test_the_record_is_byte_identical_in_another_folder_and_leaves_out_stamps_and_locks(tmp_path, prefect_harness, verify):
    for project in ("a", "deeper/b"):
        (tmp_path / project).mkdir(parents=True)
        (tmp_path / project / "params.yaml").write_text("{}\n")
        run_cached(write_weights, out_dir=tmp_path / project / "artifacts" / "step", value=3)
    records = [(tmp_path / p / "artifacts" / "step" / OUTPUT_HASHES).read_bytes() for p in ("a", "deeper/b")]
    assert records[0] == records[1]
    assert [line.split("  ")[1] for line in records[0].decode().splitlines()] == ["model/weights.bin", "result.json"]

    out = tmp_path / "a" / "artifacts" / "step"
    (out / ".lock").write_text("pid 1")  # what a lock or a temporary file puts there is no output
    (out / "nested").mkdir()
    (out / "nested" / ".inputs-key").write_text("another step's folder")
    (out / "nested" / "x.bin").write_text("its output")
    assert not changed_output(out, "write_weights")
    (out / "extra.txt").write_text("a file nobody wrote")
    assert changed_output(out, "write_weights")


def test_a_stamp_from_before_the_check_is_adopted(tmp_path, prefect_harness, verify):
    out = tmp_path / "out"
    run_cached(write_weights, out_dir=out, value=1)
    (out / OUTPUT_HASHES).unlink()  # written before output hashes were recorded
    run_cached(write_weights, out_dir=out, value=1)
    assert CALLS == [1] and (out / OUTPUT_HASHES).exists()
    record_outputs(out)
    assert json.loads((out / "result.json").read_text()) == {"value": 1}
