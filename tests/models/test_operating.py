"""Operating points chosen on dev, fixed settings, real early exit against the simulation, the
throughput table: the pure half of the evaluation step."""

import torch

from models.criteria import make_criterion
from models.operating import (
    curve_point,
    fixed_points,
    operating_points,
    real_vs_simulated,
    sweep,
)
from models.timing import throughput_by_batch_size
from models.training import record_exits
from tests.conftest import tiny_batch, tiny_model


def _recordings(model):
    return {"dev": record_exits(model, [tiny_batch(batch=12, seed=1)]),
            "test": record_exits(model, [tiny_batch(batch=10, seed=2)])}


def _no_options(name):
    return {}


def test_operating_point_is_the_fastest_sweep_point_above_the_dev_floor():
    model = tiny_model(seed=0)
    recs = _recordings(model)
    full_dev = curve_point(model, make_criterion("static", 3), recs["dev"], "accuracy", False)["quality"]
    floor = full_dev - 10.0
    curves, operating = operating_points(model, ["maxprob", "static"], recs, "accuracy", False, 5, _no_options, floor)
    assert list(curves) == list(operating) == ["maxprob", "static"]
    for name, points in curves.items():
        assert points == sweep(model, name, recs, "accuracy", False, 5)
        ok = [p for p in points if p["dev"]["quality"] >= floor]
        fastest = max(p["dev"]["layer_speedup"] for p in ok)
        assert operating[name]["dev"]["layer_speedup"] == fastest and operating[name]["dev"]["quality"] >= floor
        chosen = next(p for p in points if p["dev"] is operating[name]["dev"])
        assert operating[name]["test"] is chosen["test"]  # test is read at the dev-chosen point, never chooses


def test_without_a_point_above_the_floor_the_best_on_dev_is_taken():
    model = tiny_model(seed=0)
    recs = _recordings(model)
    curves, operating = operating_points(model, ["maxprob"], recs, "accuracy", False, 5, _no_options, float("inf"))
    assert operating["maxprob"]["dev"]["quality"] == max(p["dev"]["quality"] for p in curves["maxprob"])


def test_fixed_points_score_the_given_setting_on_every_split():
    model = tiny_model(seed=0)
    recs = _recordings(model)
    crit = make_criterion("maxprob", 0.4)
    fixed = fixed_points(model, {"maxprob": crit}, recs, "accuracy", False)
    assert fixed == {"maxprob": {"threshold": 0.4, "dev": curve_point(model, crit, recs["dev"], "accuracy", False),
                                 "test": curve_point(model, crit, recs["test"], "accuracy", False)}}


def test_real_exit_matches_its_simulation_and_a_wrong_recording_is_caught():
    model = tiny_model(seed=0)
    batch = tiny_batch(batch=10, seed=3)
    rec = record_exits(model, [batch])
    first_exit_confidence = rec.logits[0].softmax(-1).max(-1).values  # [n]
    crit = make_criterion("maxprob", first_exit_confidence.median().item())
    mismatches, exit_layer = real_vs_simulated(model, crit, [batch], rec, False)
    assert mismatches == 0 and exit_layer.shape == (10,)
    assert 1 < exit_layer.float().mean() < model.num_layers  # some rows exit early, some do not: a real test
    other = record_exits(model, [tiny_batch(batch=10, seed=4)])
    assert real_vs_simulated(model, crit, [batch], other, False)[0] > 0


def test_throughput_table_gives_each_method_its_speedup_over_the_full_model():
    batches = {1: [tiny_batch(batch=1)] * 2, 2: [tiny_batch(batch=2)]}
    runners = {"full": lambda b: torch.ones(3).sum(), "fast": lambda b: None}
    timing = throughput_by_batch_size(batches.__getitem__, runners, [1, 2], repeats=1)
    assert list(timing["full"]) == ["throughput_bs1", "throughput_bs2"] and list(timing["operating_points"]) == ["fast"]
    for bs in (1, 2):
        fast = timing["operating_points"]["fast"]
        assert fast[f"wallclock_speedup_bs{bs}"] == fast[f"throughput_bs{bs}"] / timing["full"][f"throughput_bs{bs}"]
