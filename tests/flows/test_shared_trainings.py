"""The comparison trains the single-exit full model once: static-L and HashEE's reference ask for
it with the same location-free key (flows/static.py, flows/hashee.py). Pure: the training is
intercepted before it runs."""

from __future__ import annotations

import pytest

from flows import steps as flow_steps
from config.params import load_params
from flows.context import RunContext
from tasks.caching import location_free_key


class Asked(Exception):
    pass


def test_static_l_and_the_hashee_reference_are_one_training(project, monkeypatch):
    import flows.hashee
    from flows.hashee import hashee_steps
    from flows.static import static_cell

    keys = []

    def run_shared(task, out_dir, index_dir, **kwargs):
        keys.append(location_free_key(task, index_dir, **kwargs))
        raise Asked

    monkeypatch.setattr(flow_steps, "run_shared", run_shared)
    monkeypatch.setattr(flows.hashee, "run_cached", lambda task, **kwargs: {})  # the hash table: not needed here
    params = load_params(project / "params.yaml")
    ctx = RunContext.from_params(params)
    for ask in (lambda: static_cell(ctx, "static-3"), lambda: hashee_steps(ctx, params.hashee, "compare"),
                lambda: static_cell(ctx, "static-2")):
        with pytest.raises(Asked):
            ask()
    static_l, reference, static_2 = keys  # the tiny backbone has L = 3 layers
    assert static_l == reference and static_2 != static_l
