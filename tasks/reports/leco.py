"""LECO's comparisons from evaluated models: multi-exit training (paper Table 2 shape: AVG and
BEST of the layer-wise test scores) and exiting on the LECO model (paper Figure 2 shape: COBEE
against the other criteria at target speed-ups, rows chosen on dev).

Outputs in ``out_dir``: ``comparison.json`` (DVC metrics), ``comparison.md``, ``curves.csv``
(DVC plots), ``curves.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from prefect import task

from tasks.io import atomic_write_json, atomic_write_text
from tasks.reports.tables import markdown_table
from tasks.reports.targets import speedup_markdown, write_curves
from models.tradeoff import best_on_target, speedup_rows
from tasks.metric_schema import target_label
from tasks.reports.verdicts import ONE_SEED, TESTED_BY_COMPARE, direction


def training_rows(layerwise: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Paper Table 2: per method AVG (mean layer-wise score) and BEST (best layer) on test, and
    the same on dev; ``layerwise[method]`` = ``{"dev": [...], "test": [...]}``."""
    rows = []
    for method, scores in layerwise.items():
        test, dev = scores["test"], scores["dev"]
        best = int(np.argmax(test))
        rows.append({"method": method, "test_avg": float(np.mean(test)), "test_best": float(test[best]), "best_layer": best + 1,
                     "dev_avg": float(np.mean(dev)), "test_layer_scores": list(test)})
    return rows


def training_claim(rows: list[dict], ours: str = "leco") -> dict | None:
    """LECO's test AVG above every other method's (paper Table 2); the margin is to the best other.
    None without a LECO row or without another row."""
    mine = next((r for r in rows if r["method"] == ours), None)
    others = [r for r in rows if r["method"] != ours]
    if mine is None or not others:
        return None
    rival = max(others, key=lambda r: r["test_avg"])
    margin = mine["test_avg"] - rival["test_avg"]
    return {"leco_avg": mine["test_avg"], "best_other": rival["method"], "best_other_avg": rival["test_avg"],
            "margin": margin, "holds": margin > 0}


def exiting_claim(rows: list[dict], speedups: list[float], ours: str = "cobee") -> list[dict]:
    """Per target speed-up: COBEE vs the best other criterion on the LECO model (each on target,
    chosen by dev quality); the paper's claim is COBEE best, most at large speed-ups."""
    out = []
    for target in (target_label(t) for t in speedups):
        mine = best_on_target(rows, target, lambda r: r["kind"] == "leco" and r["criterion"] == ours)
        rival = best_on_target(rows, target, lambda r: r["kind"] == "leco" and r["criterion"] != ours)
        if mine is None or rival is None:
            out.append({"at": target, "checked": False, "cobee_on_target": mine is not None})
            continue
        margin = mine["at"][target]["test_quality"] - rival["at"][target]["test_quality"]
        out.append({"at": target, "checked": True, "cobee_test_quality": mine["at"][target]["test_quality"],
                    "best_other": rival["method"], "best_other_test_quality": rival["at"][target]["test_quality"],
                    "margin": margin, "holds": margin > 0})
    return out


def leco_markdown(training: list[dict], claim: dict | None, exiting_table: str, exiting: list[dict], seed: int) -> str:
    """``comparison.md``: the training table and its claim, then the exiting table and its claims."""
    head = ["method", "test AVG", "test BEST (layer; chosen on test, as the paper)", "dev AVG"]
    rows = [[r["method"], f"{r['test_avg']:.2f}", f"{r['test_best']:.2f} ({r['best_layer']})", f"{r['dev_avg']:.2f}"]
            for r in training]
    text = markdown_table(head, rows) + "\n"
    if claim is not None:
        text += (f"\nPaper's claim (LECO's AVG above every other method's), {direction(claim['holds'])} (seed {seed}; "
                 f"{ONE_SEED}; {TESTED_BY_COMPARE}): LECO {claim['leco_avg']:.2f} vs {claim['best_other']} {claim['best_other_avg']:.2f}, "
                 f"margin {claim['margin']:+.2f} points.\n")
    text += ("\nExiting on the LECO model (and patience on JT + linear exits); the paper's claim: COBEE best, most at "
             f"large speed-ups ({ONE_SEED}; {TESTED_BY_COMPARE}):\n\n" + exiting_table)
    for c in exiting:
        if c["checked"]:
            verdict = "COBEE ahead" if c["holds"] else "COBEE behind"
            text += (f"\n- {c['at']}: {verdict} on this seed: {c['cobee_test_quality']:.2f} vs {c['best_other']} "
                     f"{c['best_other_test_quality']:.2f} ({c['margin']:+.2f})")
        else:
            text += f"\n- {c['at']}: not checked (no on-target COBEE row or no other on-target row)"
    checked = [c for c in exiting if c["checked"]]
    if len(checked) >= 2:
        first, last = checked[0], checked[-1]
        trend = "grows" if last["margin"] > first["margin"] else "does not grow"
        text += (f"\n\nCOBEE's margin {trend} with the speed-up: {first['margin']:+.2f} at {first['at']} -> "
                 f"{last['margin']:+.2f} at {last['at']} (the paper: COBEE best, most at large speed-ups).")
    return text + "\n"


@task(name="compare_leco")
def compare_leco(training_dirs: dict[str, Path], exiting_dirs: dict[str, Path], speedups: list[float],
                 out_dir: Path, task_name: str, seed: int) -> dict:
    """Both comparisons from evaluated models.

    ``training_dirs[method]``: evaluation folders of the multi-exit training comparison (AVG,
    BEST from their layer-wise test scores). ``exiting_dirs[setting]``: evaluation folders whose
    curves enter the exiting comparison (``leco``: every criterion; others: patience only).
    Writes ``comparison.json`` (DVC metrics), ``comparison.md``, ``curves.csv``, ``curves.png``;
    returns ``{"table", "comparison", "plot", "training_claim", "exiting_claim"}``.
    """
    out_dir = Path(out_dir)
    metrics = {m: json.loads((Path(d) / "metrics.json").read_text()) for m, d in training_dirs.items()}
    training = training_rows({m: v["layerwise"] for m, v in metrics.items()})
    claim = training_claim(training)
    curves = {}
    for setting, folder in exiting_dirs.items():
        found = json.loads((Path(folder) / "curves.json").read_text())
        curves[setting] = found if setting == "leco" else {k: v for k, v in found.items() if k == "patience"}
    rows = speedup_rows(curves, speedups, lambda setting, criterion: "leco" if setting == "leco" else "baseline")
    exiting = exiting_claim(rows, speedups)
    result = {"task": task_name, "seeds": [seed], "training": training, "training_claim": claim, "speedups": speedups,
              "exiting_rows": rows, "exiting_claim": exiting}
    atomic_write_json(out_dir / "comparison.json", result)
    table = leco_markdown(training, claim, speedup_markdown(rows, speedups), exiting, seed)
    atomic_write_text(out_dir / "comparison.md", table)
    reference = metrics["leco"]["full"]["test_quality"] if "leco" in metrics else 0.0
    plot = write_curves(curves, reference, f"{task_name}: exiting on the LECO model (test)", out_dir)
    return {"table": table, "comparison": out_dir / "comparison.json", "plot": plot, "training_claim": claim,
            "exiting_claim": exiting}
