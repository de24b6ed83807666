"""What the Past-Future and LECO comparisons share: the table of rows read at target speed-ups
(``tradeoff.speedup_rows``) and the curves every row came from as a CSV and a plot."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tasks.io import atomic_write_text
from tasks.plots import tradeoff_plot
from tasks.reports.tables import markdown_table
from models.tradeoff import SPEEDUP_TOLERANCE
from tasks.metric_schema import target_label


def speedup_markdown(rows: list[dict], speedups: list[float]) -> str:
    """One line per row: test quality (layer / FLOPs speed-up) at each target, off-target marked,
    then a sentence on how thresholds are chosen."""
    targets = [target_label(t) for t in speedups]
    head = ["method", "kind"] + [f"{t}: test quality (layer / FLOPs speed-up)" for t in targets]
    lines = []
    for r in rows:
        cells = [r["method"], r["kind"]]
        for t in targets:
            a = r["at"][t]
            mark = "" if a["on_target"] else " (off target)"
            cells.append(f"{a['test_quality']:.2f} ({a['test_layer_speedup']:.2f}x / {a['test_flops_speedup']:.2f}x){mark}")
        lines.append(cells)
    return markdown_table(head, lines) + (
        "\n\nThresholds are chosen on dev at the layer speed-up nearest each target; 'off target' "
        f"marks a dev speed-up more than {SPEEDUP_TOLERANCE:.0%} away from it.\n")


def write_curves(curves: dict[str, dict[str, list[dict]]], reference: float, title: str, out_dir: Path) -> Path:
    """Writes ``curves.csv`` (DVC plots) and ``curves.png`` (test quality vs layer speed-up, every
    row); returns the plot's path."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "threshold", "quality", "layer_speedup", "flops_speedup"])
    plotted = {}
    for setting, by_criterion in curves.items():
        for criterion, points in by_criterion.items():
            name = f"{setting} ({criterion})"
            plotted[name] = [p["test"] for p in points]
            for p in points:
                t = p["test"]
                w.writerow([name, t["threshold"], round(t["quality"], 4), round(t["layer_speedup"], 4), round(t["flops_speedup"], 4)])
    atomic_write_text(Path(out_dir) / "curves.csv", buf.getvalue())
    return tradeoff_plot(plotted, reference, title, Path(out_dir) / "curves.png", x="layer_speedup")
