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
