"""The artifact cache never serves a result whose files were overwritten by another call."""

import json

import pytest
from prefect import task

from tasks.caching import ARTIFACT_CACHE, run_cached
from tasks.io import atomic_write_json

pytestmark = pytest.mark.integration
CALLS = []


@task(name="write_value", cache_policy=ARTIFACT_CACHE, persist_result=True)
def write_value(value: int, out_dir):
    CALLS.append(value)
    atomic_write_json(out_dir / "result.json", {"value": value})
    return {"value": value}


def test_same_out_dir_with_other_inputs_is_recomputed_when_switching_back(tmp_path, prefect_harness):
    CALLS.clear()
    out = tmp_path / "out"
    assert run_cached(write_value, out_dir=out, value=1)["value"] == 1
    assert run_cached(write_value, out_dir=out, value=1)["value"] == 1
    assert CALLS == [1]  # second call: cache hit
    run_cached(write_value, out_dir=out, value=2)  # another config writes the same folder
    assert run_cached(write_value, out_dir=out, value=1)["value"] == 1
    assert CALLS == [1, 2, 1]  # the folder held value 2: value 1 is recomputed, not served stale
    assert json.loads((out / "result.json").read_text()) == {"value": 1}


@task(name="write_model", cache_policy=ARTIFACT_CACHE, persist_result=True)
def write_model(value: int, out_dir):
    CALLS.append(value)
    atomic_write_json(out_dir / "model.json", {"value": value})
    atomic_write_json(out_dir / "result.json", {"value": value})  # what tasks.io.write_result leaves
    return {"value": value, "model": str(out_dir / "model.json")}


def test_same_inputs_in_two_folders_train_once_and_are_counted(tmp_path, prefect_harness):
    from tasks.caching import run_shared, shared_counts, shared_index

    CALLS.clear()
    (tmp_path / "params.yaml").write_text("{}\n")  # a project: folders are recorded relative to it
    index = tmp_path / "cache" / "trainings"
    first = run_shared(write_model, out_dir=tmp_path / "static-6", index_dir=index, value=1)
    second = run_shared(write_model, out_dir=tmp_path / "reference", index_dir=index, value=1)
    assert CALLS == [1] and second == first  # the same key: one training, the second folder gets its result
    assert not (tmp_path / "reference" / "model.json").exists()
    other = run_shared(write_model, out_dir=tmp_path / "other", index_dir=index, value=2)
    assert CALLS == [1, 2] and other["value"] == 2  # other inputs: another key, another training
    again = run_shared(write_model, out_dir=tmp_path / "reference", index_dir=index, value=1)  # a re-run asks again
    assert again == first and CALLS == [1, 2]
    assert shared_counts(shared_index([index])) == {"requested": 3, "trained": 2}
    # the first folder's files changed by another call: no longer served, the asking folder trains its own
    run_cached(write_value, out_dir=tmp_path / "static-6", value=9)
    run_shared(write_model, out_dir=tmp_path / "reference", index_dir=index, value=1)
    assert CALLS == [1, 2, 9, 1] and (tmp_path / "reference" / "model.json").exists()
