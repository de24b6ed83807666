"""ConsistentEE's reports: the comparison against the strategy models' criteria (paper claim: at <= 1%
relative accuracy loss it saves more layers than the best baseline) and the reward ablation
(paper Figure 4)."""

from __future__ import annotations

import json
from pathlib import Path

from models.operating import fastest_within
from tasks.io import atomic_write_json, atomic_write_text
from tasks.plots import tradeoff_plot
from tasks.reports.tables import markdown_table
from tasks.reports.verdicts import ONE_SEED, TESTED_BY_COMPARE, direction


def fastest_rows(models: dict[str, Path], relative_loss: float) -> tuple[list[dict], dict[str, list[dict]]]:
    """``(rows, curves)``: per evaluated model folder and criterion (``static`` left out), the
    fastest dev setting within ``relative_loss`` of the model's full-depth dev quality, with its
    test numbers; and every criterion's test curve. Folders without ``metrics.json`` are skipped."""
    rows, curves = [], {}
    for label, d in models.items():
        if not (d / "metrics.json").exists():
            continue
        summary = json.loads((d / "metrics.json").read_text())
        full_dev, full_test = summary["full"]["dev_quality"], summary["full"]["test_quality"]
        for name, points in json.loads((d / "curves.json").read_text()).items():
            if name == "static":
                continue
            curves[f"{label}/{name}"] = [p["test"] for p in points]
            best = fastest_within(points, (1.0 - relative_loss) * full_dev)  # fastest within the relative loss on dev
            if best is None:
                continue
            rows.append({"model": label, "criterion": name, "threshold": best["dev"]["threshold"],
                         "test_quality": best["test"]["quality"], "full_test_quality": full_test,
                         "relative_loss_pct": 100.0 * (1 - best["test"]["quality"] / full_test),
                         "saved_layers_pct": 100.0 * best["test"]["saved_layers"],
                         "layer_speedup": best["test"]["layer_speedup"], "flops_speedup": best["test"]["flops_speedup"]})
    return rows, curves


def consistentee_markdown(rows: list[dict], relative_loss: float) -> str:
    """The rows, most saved layers first, under a sentence saying how they were chosen."""
    head = ["model", "criterion", "threshold (dev)", "test quality", "full model", "relative loss %", "saved layers %",
            "layer speed-up", "FLOPs speed-up"]
    cells = [[r["model"], r["criterion"], f"{r['threshold']:.3f}", f"{r['test_quality']:.2f}", f"{r['full_test_quality']:.2f}",
              f"{r['relative_loss_pct']:.2f}", f"{r['saved_layers_pct']:.1f}", f"{r['layer_speedup']:.2f}",
              f"{r['flops_speedup']:.2f}"] for r in sorted(rows, key=lambda r: -r["saved_layers_pct"])]
    return (f"Fastest dev setting within {100 * relative_loss:g}% relative dev loss of each model's full depth; "
            "test numbers.\n\n" + markdown_table(head, cells) + "\n")


def consistentee_report(cee_dir: Path, baseline_dirs: dict[str, Path], out_dir: Path, relative_loss: float = 0.01,
                        tau: float = 0.5) -> dict:
    """ConsistentEE vs the strategy models' criteria. Thresholds are chosen on dev; test numbers are reported.

    ``cee_dir``/``baseline_dirs`` are ``evaluate_exits`` output folders; every criterion on every
    model is a candidate (the ConsistentEE model's own entropy/patience too). Writes
    ``results.md``, ``results.json``, ``tradeoff.png``; returns ``{"table", "rows", "claim_holds", "plot"}``.
    """
    models = {"consistentee": Path(cee_dir), **{k: Path(v) for k, v in baseline_dirs.items()}}
    rows, curves = fastest_rows(models, relative_loss)
    cee = json.loads((models["consistentee"] / "metrics.json").read_text())
    at_tau = cee["fixed_points"].get("policy")
    policy_rows = [r for r in rows if r["model"] == "consistentee" and r["criterion"] == "policy"]
    baseline_rows = [r for r in rows if not (r["model"] == "consistentee" and r["criterion"] == "policy")]
    best_baseline = max(baseline_rows, key=lambda r: r["saved_layers_pct"]) if baseline_rows else None
    holds = bool(policy_rows and best_baseline and policy_rows[0]["saved_layers_pct"] > best_baseline["saved_layers_pct"])
    text = consistentee_markdown(rows, relative_loss)
    if at_tau is not None:
        text += (f"\nConsistentEE at tau = {tau:g}: test quality {at_tau['test']['quality']:.2f} "
                 f"(full {cee['full']['test_quality']:.2f}), saved layers {100 * at_tau['test']['saved_layers']:.1f}%, "
                 f"layer speed-up {at_tau['test']['layer_speedup']:.2f}x, FLOPs speed-up {at_tau['test']['flops_speedup']:.2f}x.\n")
    if best_baseline is not None:
        text += (f"\nPaper's claim (saves more layers than the best baseline at <= {100 * relative_loss:g}% loss), "
                 f"{direction(holds)} here ({ONE_SEED}; {TESTED_BY_COMPARE}): ConsistentEE "
                 f"{policy_rows[0]['saved_layers_pct'] if policy_rows else float('nan'):.1f}% vs "
                 f"{best_baseline['model']}/{best_baseline['criterion']} {best_baseline['saved_layers_pct']:.1f}%.\n")
    tradeoff_plot(curves, cee["full"]["test_quality"], f"{cee['task']}: ConsistentEE vs baselines (test)",
                  out_dir / "tradeoff.png", x="layer_speedup")
    atomic_write_text(out_dir / "results.md", text)
    atomic_write_json(out_dir / "results.json", {"rows": rows, "at_tau": at_tau, "claim_holds": holds,
                                                 "best_baseline": best_baseline})
    return {"table": text, "rows": rows, "claim_holds": holds, "plot": str(out_dir / "tradeoff.png")}


def ablation_report(points: dict[str, list[dict]], full_quality: float, out_dir: Path) -> dict:
    """Paper Figure 4: test quality vs layer speed-up at tau for each reward over the alpha grid.
    ``points[reward]`` = ``[{"alpha", "quality", "layer_speedup"}, ...]``. Writes ``ablation.md``,
    ``ablation.json``, ``ablation.png``; returns ``{"table", "plot"}``."""
    rows = [[reward, f"{p['alpha']:g}", f"{p['quality']:.2f}", f"{p['layer_speedup']:.2f}"]
            for reward, pts in points.items() for p in sorted(pts, key=lambda p: p["alpha"])]
    text = markdown_table(["reward", "alpha", "test quality", "layer speed-up"], rows) + "\n"
    tradeoff_plot(points, full_quality, "ConsistentEE reward ablation (test, tau at default)", out_dir / "ablation.png",
                  x="layer_speedup")
    atomic_write_text(out_dir / "ablation.md", text)
    atomic_write_json(out_dir / "ablation.json", points)
    return {"table": text, "plot": str(out_dir / "ablation.png")}
