"""The HashEE study report: one row per hash (test quality, FLOPs and measured speed-ups) and a
quality vs FLOPs speed-up plot."""

from __future__ import annotations

from pathlib import Path

from tasks.io import atomic_write_json, atomic_write_text
from tasks.plots import tradeoff_plot
from tasks.reports.tables import markdown_table


def hashee_row(name: str, m: dict) -> dict:
    """The study row of hash ``name`` from its evaluation metrics ``m`` (with wall-clock entries)."""
    return {"hash": name, "quality": m["test_quality"], "full_quality": m["full_test_quality"],
            "flops_speedup": m["flops_speedup"], "flops_speedup_vs_12_layers": m["flops_speedup_vs_12_layers"],
            **{k: v for k, v in m.items() if k.startswith("wallclock_speedup_bs")}}


def hashee_study_report(summaries: dict[str, dict], out_dir: Path) -> dict:
    """Writes ``results.md``, ``results.json`` and ``tradeoff.png``; returns ``{"table", "rows", "plot"}``."""
    rows = [hashee_row(name, m) for name, m in summaries.items()]
    walls = sorted({k for r in rows for k in r if k.startswith("wallclock")})
    head = ["hash", "test quality", "full model", "FLOPs speed-up", "FLOPs speed-up vs 12L"] + [w.replace("wallclock_speedup_", "wall-clock ") for w in walls]
    cells = [[r["hash"], f"{r['quality']:.2f}", f"{r['full_quality']:.2f}", f"{r['flops_speedup']:.2f}",
              f"{r['flops_speedup_vs_12_layers']:.2f}"] + [f"{r[w]:.2f}" for w in walls] for r in rows]
    table = markdown_table(head, cells) + "\n"
    full = next(iter(summaries.values()))["full_test_quality"]
    curves = {r["hash"]: [{"quality": r["quality"], "flops_speedup": r["flops_speedup"]}] for r in rows}
    tradeoff_plot(curves, full, "HashEE: test quality vs FLOPs speed-up", out_dir / "tradeoff.png")
    atomic_write_text(out_dir / "results.md", table)
    atomic_write_json(out_dir / "results.json", {"rows": rows})
    return {"table": table, "rows": rows, "plot": str(out_dir / "tradeoff.png")}
