"""The comparison's claims with intervals (tasks/reports/claims.py) on hand-made cells whose per-row
test predictions are written in the test: known verdicts, seed counts, flags (L = 6, 2 seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.reports.cells import ComparisonCell
from tasks.reports.claims import claims_for_task, flag_reasons, rows_loader
from tasks.reports.comparison import compare_report
from tasks.row_predictions import SINGLE_POINT, row_key, write_test_rows

N = 40
GOLD = np.array([0, 1] * (N // 2))


def side(s: float, q: float, threshold: float | None = 0.5) -> dict:
    return {"threshold": threshold, "quality": q, "layer_speedup": s, "flops_speedup": s}


def right_on(k: int) -> np.ndarray:
    """Predictions right on the first ``k`` rows, wrong on the rest."""
    return np.where(np.arange(N) < k, GOLD, 1 - GOLD)


def make_cell(folder, method: str, seed: int, points: list[tuple[float, int]], at_chance: bool = False,
              full_dev: float | None = None, layers: list[int] | None = None) -> ComparisonCell:
    """One cell whose single criterion has a point per ``(test layer speed-up, rows right)``; dev = test;
    ``layers``: rows right at each exit 1..6 (layer-wise predictions)."""
    criterion = "static" if method.startswith("static-") else "entropy"
    preds = {row_key(criterion, i): right_on(k) for i, (_, k) in enumerate(points)}
    if len(points) == 1:
        preds = {SINGLE_POINT: right_on(points[0][1])}
    preds.update({f"layer:{i}": right_on(k) for i, k in enumerate(layers or [], 1)})
    path = write_test_rows(folder / f"{method}-{seed}", GOLD, preds, regression=False)
    one_point = method == "hashee" or method.startswith("static-")  # one operating point, no threshold
    series = {criterion: [{"dev": side(s, 100 * k / N, None if one_point else 0.5),
                           "test": side(s, 100 * k / N, None if one_point else 0.5)} for s, k in points]}
    full = 100 * points[0][1] / N if full_dev is None else full_dev
    return ComparisonCell.from_json({
        "task": "sst2", "method": method, "seed": seed, "status": "ok", "error": None, "metric": "accuracy",
        "num_layers": 6, "lr": 3e-4, "lr_scores": {}, "dev_score": full, "full": {"dev": full, "test": full},
        "series": series, "timed": {}, "checkpoint": None, "test_rows": str(path), "at_chance": at_chance})


def grid(folder) -> dict[str, list]:
    by_method = {}
    for seed in (1, 2):
        cells = [make_cell(folder, "joint", seed, [(1.0, 36), (2.0, 30), (3.0, 20)], layers=[10, 20, 30, 36, 36, 36]),
                 make_cell(folder, "leco", seed, [(1.0, 36)], layers=[16, 26, 30, 36, 36, 36]),
                 make_cell(folder, "alternating", seed, [(1.0, 36), (2.0, 30), (3.0, 20)]),  # same rows right as joint
                 make_cell(folder, "hashee", seed, [(2.0, 40)]),  # right everywhere at 2x
                 make_cell(folder, "broken", seed, [(1.0, 20), (2.0, 20)], at_chance=True),
                 make_cell(folder, "weak", seed, [(1.0, 20), (2.0, 20)], full_dev=50.0),
                 make_cell(folder, "static-6", seed, [(1.0, 38)]), make_cell(folder, "static-3", seed, [(2.0, 0)])]
        for c in cells:
            by_method.setdefault(c.method, []).append(c)
    return by_method


def test_claims_give_known_verdicts_with_their_seed_counts(tmp_path):
    by_method = grid(tmp_path)
    flags = flag_reasons(by_method)
    assert flags[("broken", 1)] == "at chance on dev" and "below the full model" in flags[("weak", 2)]
    claims = claims_for_task(by_method, (2.0, 3.0), rows_loader(None), flags, resamples=300)
    # ALT and JT are right on the same rows: the interval is [0, 0], no difference detected
    alt = claims["named"]["BERxiT ALT vs JT"]["2x"]
    assert (alt["difference"], alt["low"], alt["high"], alt["verdict"], alt["seeds"]) == (0.0, 0.0, 0.0,
                                                                                         "no difference detected", 2)
    # HashEE is right on every row at 2x, the static line (static-3) on none: +100 on every resample
    hashee = claims["named"]["HashEE vs static"]["2x"]
    assert hashee["difference"] == pytest.approx(100.0) and hashee["verdict"] == "holds" and hashee["seeds"] == 2
    assert hashee["low"] == pytest.approx(100.0) and hashee["high"] == pytest.approx(100.0)
    # joint at 2x is right on the first 30 rows: +75, and resamples move it (rows differ in what they add)
    joint = claims["against_static"]["joint"]["2x"]
    assert joint["difference"] == pytest.approx(75.0) and 0 < joint["low"] < 75 < joint["high"]
    assert joint["verdict"] == "holds"
    # at 1.5x the static line is read between static-6 (1x, 95) and static-3 (2x, 0): both cells' rows, halved
    half = claims_for_task(by_method, (1.5,), rows_loader(None), flags, resamples=100)["against_static"]["joint"]["1.5x"]
    assert half["difference"] == pytest.approx((90 + 75) / 2 - 95 / 2)
    # at 3x the static line (reach 2x) is not reached: no interval, no verdict
    assert claims["against_static"]["joint"]["3x"]["seeds"] == 0
    # LECO AVG: every exit's rows; LECO's first two exits are right on 6 more rows each: +12 / 6 / 40 = +5 points
    avg = claims["layerwise"]["LECO AVG vs JT-linear (joint): mean over exits 1..L"]
    assert avg["difference"] == pytest.approx(100 * 12 / 6 / N) and avg["seeds"] == 2 and avg["verdict"] == "holds"
    # flagged cells enter no claim
    assert "broken" not in claims["against_static"] and "weak" not in claims["against_static"]


def test_a_one_point_model_far_below_the_full_model_is_not_flagged_but_enters_its_claim(tmp_path):
    """HashEE has no full-depth model: its quality is its 2x operating point's, which may sit far below
    static-L by design; a multi-exit model as far below is a failed training and is flagged."""
    by_method = grid(tmp_path)
    by_method["hashee"] = [make_cell(tmp_path, "hashee", seed, [(2.0, 20)]) for seed in (1, 2)]  # 50 vs static-6's 95
    by_method["weak"] = [make_cell(tmp_path, "weak", seed, [(1.0, 20), (2.0, 20)]) for seed in (1, 2)]  # also 50
    flags = flag_reasons(by_method)
    assert ("hashee", 1) not in flags and ("hashee", 2) not in flags
    assert "below the full model" in flags[("weak", 1)] and "below the full model" in flags[("weak", 2)]
    claim = claims_for_task(by_method, (2.0,), rows_loader(None), flags, resamples=100)["named"]["HashEE vs static"]["2x"]
    assert claim["seeds"] == 2 and claim["difference"] == pytest.approx(50.0)  # static-3 is right on no row at 2x


def test_past_future_is_claimed_against_both_local_objectives(tmp_path):
    """Past-Future trains with the weighted objective: it is read against weighted local exits (like for
    like) as well as joint ones, each claim on its own rows."""
    by_method = grid(tmp_path)
    by_method["weighted"] = [make_cell(tmp_path, "weighted", seed, [(1.0, 36), (2.0, 26)]) for seed in (1, 2)]
    by_method["past-future"] = [make_cell(tmp_path, "past-future", seed, [(1.0, 36), (2.0, 30)]) for seed in (1, 2)]
    named = claims_for_task(by_method, (2.0,), rows_loader(None), flag_reasons(by_method), resamples=100)["named"]
    joint, weighted = named["Past-Future vs local exits (joint)"]["2x"], named["Past-Future vs local exits (weighted, its own objective)"]["2x"]
    assert (joint["difference"], joint["seeds"]) == (0.0, 2)  # right on the same 30 rows as joint
    assert weighted["difference"] == pytest.approx(100 * 4 / N) and weighted["seeds"] == 2  # 4 rows more than weighted


def test_claims_need_per_row_predictions_on_both_sides(tmp_path):
    by_method = grid(tmp_path)
    by_method["joint"] = [ComparisonCell.from_json({**c.to_json(), "test_rows": None}) for c in by_method["joint"]]
    claims = claims_for_task(by_method, (2.0,), rows_loader(None), {}, resamples=100)
    assert claims["named"]["BERxiT ALT vs JT"]["2x"]["seeds"] == 0
    assert "no per-row predictions" in claims["named"]["BERxiT ALT vs JT"]["2x"]["verdict"]


def test_report_prints_intervals_and_flags_and_ranks_no_flagged_method(tmp_path):
    cells = [c for cells in grid(tmp_path).values() for c in cells]
    report = compare_report(cells, (2.0,), out_dir=tmp_path / "report", resamples=100)
    table = report["table"]
    assert "+100.0 [+100.0, +100.0] holds (2 seeds)" in table
    assert "+0.0 [+0.0, +0.0] no difference detected (2 seeds)" in table
    assert "FLAGGED, not ranked: at chance on dev" in table
    import json

    data = json.loads((tmp_path / "report" / "compare.json").read_text())
    ranks = data["overall"]["average_rank"]
    assert ranks["broken"]["mean"] is None and ranks["weak"]["mean"] is None and ranks["joint"]["mean"] is not None
