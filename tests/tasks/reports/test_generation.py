"""The generation report (tasks/reports/generation.py): fronts, the claim check, the operating point."""

import json

import pytest

from tasks.reports.generation import anchored_front, claim_check, report_generation


def test_anchored_front_and_claim_check():
    rows = [{"layer_speedup": 2.0, "rouge_l": 0.8}, {"layer_speedup": 1.5, "rouge_l": 0.7}, {"layer_speedup": 3.0, "rouge_l": 0.5}]
    # the full-depth anchor (1x, 1.0) joins every front; 1.5x at 0.7 is beaten by 2x at 0.8
    assert [r["layer_speedup"] for r in anchored_front(rows)] == [1.0, 2.0, 3.0]

    def curve(points):
        return [{"split": "test", "layer_speedup": x, "rouge_l": y} for x, y in points]

    curves = {"policy": curve([(1.0, 1.0), (3.0, 0.7)]), "softmax": curve([(1.0, 1.0), (3.0, 0.4)]),
              "saturation": curve([(1.0, 1.0), (2.0, 0.8), (4.0, 0.3)])}
    out = claim_check(curves, [1.5, 2.0, 3.0, 5.0])
    at = {row["speedup"]: row for row in out["rows"]}
    assert at[2.0]["policy"] == pytest.approx(0.85) and at[2.0]["calm_best"] == pytest.approx(0.8)
    assert at[3.0]["calm_best"] == pytest.approx(0.55)  # saturation, interpolated between 2x and 4x
    assert at[5.0]["policy"] is None  # outside the curve
    assert out["holds"] is True and out["margins"][3.0] == pytest.approx(0.15)
    curves["saturation"] = curve([(1.0, 1.0), (3.0, 0.9)])
    assert claim_check(curves, [2.0, 3.0])["holds"] is False
    # only the policy reaches 3x: it holds there; a curve's front starts at the full-depth anchor
    curves = {"policy": curve([(3.0, 0.6)]), "softmax": curve([(2.0, 0.5)]), "saturation": curve([(1.2, 0.9)])}
    out = claim_check(curves, [1.5, 2.0, 3.0])
    at = {row["speedup"]: row for row in out["rows"]}
    assert at[1.5]["policy"] == pytest.approx(1.0 - 0.4 * 0.25)  # interpolated from (1, 1) to (3, 0.6)
    assert at[3.0]["calm_best"] is None and out["reach"] == {"policy": 3.0, "softmax": 2.0, "saturation": 1.2}
    assert out["holds"] is True and set(out["margins"]) == {2.0}
    flops = claim_check({"policy": [{"split": "test", "layer_speedup": 3.0, "flops_speedup": 1.4, "rouge_l": 0.7}]},
                        [2.0], "flops_speedup")
    assert flops["holds"] is None and flops["reach"] == {"policy": 1.4}


def test_report_picks_the_fastest_dev_setting_over_the_bar_and_reports_its_test_numbers(tmp_path):
    def row(split, threshold, speedup, rouge):
        return {"split": split, "threshold": threshold, "layer_speedup": speedup, "flops_speedup": speedup,
                "avg_exit_layer": 30 / speedup, "rouge_l": rouge}

    curve = [row("dev", 0.9, 1.1, 0.95), row("test", 0.9, 1.1, 0.90),
             row("dev", 0.5, 1.5, 0.85), row("test", 0.5, 1.6, 0.70),  # fastest over 0.8 on dev; test lower
             row("dev", 0.1, 2.0, 0.60), row("test", 0.1, 2.0, 0.95)]  # best on test, but under the bar on dev
    (tmp_path / "policy.json").write_text(json.dumps(curve))
    (tmp_path / "examples.json").write_text(json.dumps([{"threshold": 0.9, "responses": []}]))
    out = report_generation.fn({"policy": tmp_path / "policy.json"}, tmp_path / "examples.json", [1.5], 0.8,
                               tmp_path / "report", "t")
    picked = json.loads((tmp_path / "report/summary.json").read_text())["operating_points"]["policy"]
    assert picked["threshold"] == 0.5 and picked["rouge_l"] == 0.70 and picked["layer_speedup"] == 1.6
    assert "| policy | 0.5 | 0.700 | 1.60x |" in out["table"]
