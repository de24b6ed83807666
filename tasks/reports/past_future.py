"""The Global Past-Future comparison (paper Tables 1-3 shape) from evaluated models.

Every row is one trained model with one criterion: the local exits (``local-joint``,
``local-weighted`` with entropy, and ``local-weighted`` with patience = PABEE), the naive
global baselines (``vote``, ``ensemble``), each past strategy alone and with the imitated
future. For each target layer speed-up (``past_future.speedups``) the row's threshold is the
one whose *dev* layer speed-up is closest to the target; its test numbers are reported.

A row whose dev speed-up misses the target by more than 4% (the paper's tolerance; e.g.
patience cannot go past L/2 = 3x with L = 6) is marked off target in the table and cannot take
part in the claim check (paper sections 4.3-4.4: Past-Future beats local exits, most at high
speed-ups): at the largest target, the on-target past-future row with the best dev quality
against the on-target local row with the best dev quality; the margin is their test difference.

Outputs in ``out_dir``: ``comparison.json`` (DVC metrics), ``comparison.md``, ``curves.csv``
(DVC plots), ``curves.png`` (test quality vs layer speed-up, every row).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from models.past_future import NAIVE
from tasks.io import atomic_write_json, atomic_write_text
from tasks.past_future import LOCAL_PREFIX
from tasks.reports.targets import speedup_markdown, write_curves
from models.tradeoff import best_on_target, speedup_rows, target_label
from tasks.reports.verdicts import ONE_SEED, TESTED_BY_COMPARE, direction


def row_kind(setting: str) -> str:
    """``local``, ``naive``, ``past`` or ``past-future`` for a setting name."""
    if setting.startswith(LOCAL_PREFIX):
        return "local"
    if setting in NAIVE:
        return "naive"
    return "past-future" if setting.endswith("-future") else "past"


def comparison_rows(curves: dict[str, dict[str, list[dict]]], speedups: list[float]) -> list[dict]:
    """``curves[setting][criterion]`` = sweep points -> rows at each target (``tradeoff.speedup_rows``)."""
    return speedup_rows(curves, speedups, lambda setting, criterion: row_kind(setting))


def claim_check(rows: list[dict], target: str) -> dict | None:
    """Best on-target past-future row vs best on-target local row at ``target`` (both chosen by
    dev quality); None when either kind has no row within the tolerance."""
    pf = best_on_target(rows, target, lambda r: r["kind"] == "past-future")
    local = best_on_target(rows, target, lambda r: r["kind"] == "local")
    if pf is None or local is None:
        return None
    a, b = pf["at"][target], local["at"][target]
    margin = a["test_quality"] - b["test_quality"]
    return {"at": target, "past_future": pf["method"], "local": local["method"],
            "past_future_test_quality": a["test_quality"], "local_test_quality": b["test_quality"],
            "past_future_dev_speedup": a["dev_layer_speedup"], "local_dev_speedup": b["dev_layer_speedup"],
            "margin": margin, "holds": margin > 0}


def comparison_markdown(rows: list[dict], speedups: list[float], claim: dict | None, full: dict[str, float]) -> str:
    """``comparison.md``: the rows at each target, the full models' test quality and the claim."""
    full_line = ", ".join(f"{k} {v:.2f}" for k, v in sorted(full.items()))
    text = speedup_markdown(rows, speedups).replace("\n\nThresholds", f"\n\nFull models (test): {full_line}\n\nThresholds", 1)
    if claim is not None:
        text += (f"\nPaper's claim (Past-Future above the best local exit at {claim['at']}, rows chosen on dev), "
                 f"{direction(claim['holds'])} ({ONE_SEED}; {TESTED_BY_COMPARE}): "
                 f"{claim['past_future']} {claim['past_future_test_quality']:.2f} (dev {claim['past_future_dev_speedup']:.2f}x) "
                 f"vs {claim['local']} {claim['local_test_quality']:.2f} (dev {claim['local_dev_speedup']:.2f}x), "
                 f"margin {claim['margin']:+.2f} points.\n")
    else:
        text += "\nClaim not checked: no past-future or no local row reached the largest target within the tolerance.\n"
    return text


@task(name="compare_past_future")
def compare_past_future(eval_dirs: dict[str, Path], speedups: list[float], out_dir: Path, task_name: str,
                        seed: int) -> dict:
    """Reads every setting's ``curves.json`` and ``metrics.json``, writes the comparison; returns
    ``{"table", "comparison", "plot", "claim", "rows"}``."""
    out_dir = Path(out_dir)
    curves = {s: json.loads((Path(d) / "curves.json").read_text()) for s, d in eval_dirs.items()}
    full = {s: json.loads((Path(d) / "metrics.json").read_text())["full"]["test_quality"] for s, d in eval_dirs.items()}
    rows = comparison_rows(curves, speedups)
    claim = claim_check(rows, target_label(max(speedups))) if speedups else None
    result = {"task": task_name, "seeds": [seed], "speedups": speedups, "rows": rows, "full_test_quality": full,
              "claim": claim}
    atomic_write_json(out_dir / "comparison.json", result)
    table = comparison_markdown(rows, speedups, claim, full)
    atomic_write_text(out_dir / "comparison.md", table)
    reference = max(full.values()) if full else 0.0
    plot = write_curves(curves, reference, f"{task_name}: Global Past-Future vs local exits (test)", out_dir)
    return {"table": table, "comparison": out_dir / "comparison.json", "plot": plot, "claim": claim, "rows": rows}
