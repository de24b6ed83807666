"""The report of ``exitflow compare``: finished grid cells (task x method x seed) -> ``compare.json``,
``compare.md``, and per task ``pareto-<task>.png`` / ``.csv`` and ``wallclock-<task>.png``.

A cell is one (task, method, seed), a ``tasks.reports.cells.ComparisonCell``. Quality is in
percent (higher is better); speed-ups are ratios to the full-depth model (x). A sweep point is
``{"dev": {"threshold", "quality", "layer_speedup", "flops_speedup"}, "test": {...}}``.

How the numbers are chosen (``SELECTION``, also printed in compare.md):

- each seed's learning rate was chosen on dev by the flow; the report takes that model as given;
- a method's curve is the union of its criteria's sweep points (each remembers its criterion),
  reduced to the Pareto front on DEV (dev layer speed-up, dev quality); the TEST numbers of those
  points are what is reported and plotted, so dev/test disagreement stays visible;
- quality at a target = test quality interpolated linearly in test layer speed-up; a target below
  the curve's slowest point takes that point's quality (a faster point meets a lower target);
  beyond the curve's reach (its largest test layer speed-up) it is not reached (None);
- a static-k row is its single point, so it counts at every target up to its own speed-up L/k;
- AUC[lo, hi] = area under that curve over [lo, hi] / (hi - lo), quality 0 beyond the reach;
- over seeds: mean ± sample std (ddof=1); one seed shows the mean alone; values that are None
  (not reached) are left out and "(n/m seeds)" says how many of the m ok seeds count;
- the timed column takes the method's criterion whose dev operating point is fastest on dev (mean
  dev layer speed-up over seeds, then dev quality), as the champion model ships; wall-clock is
  measured on test rows, so it never chooses.

Plots (one figure per task, test numbers): the readings at each target and the timed dev
operating points as markers with seed error bars, never joined by lines (dev-chosen points need
not form a front on test); the static line through the static-k seed means with a ± std band.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Callable

import numpy as np

from tasks.io import atomic_write_json, atomic_write_text
from tasks.plots import STATIC_STYLE, XLABELS, _save, legend_right, method_styles, plt, speedup_scatter
from tasks.reports.cells import STATUSES, ComparisonCell, is_static, static_depth
from tasks.reports.claims import FLAG_GAP, claims_for_task, claims_markdown, flag_reasons, rows_loader
from tasks.reports.tables import escape_cell, format_mean_std, markdown_table
from models.tradeoff import average_ranks, curve_auc, dev_chosen_front, mean_std, quality_at
from tasks.metric_schema import TARGET_SPEEDUPS, target_label

SELECTION = ("Numbers: per seed, the learning rate chosen on dev; a method's curve is the union of its criteria's "
             "sweep points reduced to the Pareto front on dev (dev layer speed-up, dev quality), reported with its "
             "TEST numbers. Quality at a speed-up is interpolated in test layer speed-up (flat below the slowest "
             "point, 'not reached' beyond the curve's reach; a static-k row is one point at L/k). AUC[1,3] = area "
             "under that curve over 1x..3x / 2 with quality 0 beyond the reach. Cells: mean ± std over seeds "
             "(ddof=1; one seed: mean only); '(n/m seeds)' = only n of the m ok seeds count. Timed: batch-32 "
             "wall-clock speed-up at the dev operating point of the criterion fastest on dev, with its test quality.")
INTERVALS = ("Claims: the test-quality difference A - B at a target, mean over seeds, with a 95% paired bootstrap "
             "interval (the same resampled test rows on both sides and, with two seeds or more, the same resampled "
             "seeds; the metric recomputed on every resample; the dev-chosen operating points held fixed). A claim "
             "holds or fails only when its interval excludes 0, else 'no difference detected'. Flagged cells (full "
             "model at chance on dev, or far below the full static model on dev) are shown but never ranked nor claimed.")


# ---- aggregation over seeds --------------------------------------------------------------------

def summarise_method(cells: list[ComparisonCell], speedups: tuple[float, ...],
                     auc_range: tuple[float, float] = (1.0, 3.0)) -> dict:
    """One (task, method)'s cells (one per seed) -> aggregated numbers (see ``compare_report``)."""
    ok = [c for c in cells if c.ok]
    fronts = [dev_chosen_front(c.points) for c in ok]
    aucs = [curve_auc(f, *auc_range) for f in fronts]
    timed_by_cell = [dict(c.timed) for c in ok]
    criteria = sorted({k for timed in timed_by_cell for k in timed})
    timed = None
    if criteria:
        def dev_rank(k: str) -> tuple:  # chosen on dev: the fastest dev operating point, then its dev quality
            points = [t.get(k) for t in timed_by_cell]
            speed = mean_std([p.dev_speedup if p else None for p in points])["mean"]
            quality = mean_std([p.dev_quality if p else None for p in points])["mean"]
            return (-math.inf if speed is None else speed, -math.inf if quality is None else quality)
        best = max(criteria, key=dev_rank)
        chosen = [t.get(best) for t in timed_by_cell]
        timed = {"criterion": best, "wallclock_speedup": mean_std([p.wallclock_speedup if p else None for p in chosen]),
                 "test_quality": mean_std([p.test_quality if p else None for p in chosen])}
    return {
        "kind": cells[0].kind, "metric": cells[0].metric, "seeds": [c.seed for c in cells],
        "status": {s: sum(c.status == s for c in cells) for s in STATUSES},
        "errors": [{"seed": c.seed, "status": c.status, "error": c.error} for c in cells if not c.ok],
        "lr": [{"seed": c.seed, "lr": c.lr} for c in ok],
        "full_dev": mean_std([c.summary.full_dev for c in ok]), "full_test": mean_std([c.summary.full_test for c in ok]),
        "quality_at": {target_label(t): mean_std([quality_at(f, t) for f in fronts]) for t in speedups},
        "auc": mean_std([a for a, _ in aucs]), "reach": mean_std([r for _, r in aucs]),
        "timed": timed, "cells": [c.to_json() for c in cells],
    }


# ---- markdown ----------------------------------------------------------------------------------

def _status_text(summary: dict) -> str:
    counts, total = summary["status"], len(summary["seeds"])
    parts = [("ok" if total == 1 else f"ok ({total} seeds)") if counts["ok"] == total else
             (f"{counts['ok']}/{total} ok" if counts["ok"] else "")]
    problems: dict[tuple, list] = {}
    for e in summary["errors"]:  # a pending cell's reason is the report's INCOMPLETE note, said once
        problems.setdefault((e["status"], None if e["status"] == "pending" else e["error"]), []).append(str(e["seed"]))
    parts += [f"{status}{f': {error}' if error else ''} (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
              for (status, error), seeds in problems.items()]
    flagged: dict[str, list] = {}
    for f in summary.get("flagged", []):
        flagged.setdefault(f["why"], []).append(str(f["seed"]))
    parts += [f"FLAGGED, not ranked: {why} (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
              for why, seeds in flagged.items()]
    return escape_cell("; ".join(p for p in parts if p))


def _lr_text(summary: dict) -> str:
    lrs = [f"{e['lr']:g}" for e in summary["lr"] if e["lr"] is not None]
    return "—" if not lrs else lrs[0] if len(set(lrs)) == 1 else ", ".join(lrs) + " (per seed)"


def _row(method: str, s: dict) -> list[str]:
    if not s["status"]["ok"]:
        return [method, _status_text(s)] + ["—"] * (len(s["quality_at"]) + 5)  # lr, full test, targets, AUC, reach, timed
    timed = s["timed"]
    timed_text = "—" if timed is None else (f"{format_mean_std(timed['wallclock_speedup'], 2, 'x')} @ "
                                             f"{format_mean_std(timed['test_quality'])} ({timed['criterion']})")
    return ([method, _status_text(s), _lr_text(s), format_mean_std(s["full_test"])]
            + [format_mean_std(a) for a in s["quality_at"].values()]
            + [format_mean_std(s["auc"]), format_mean_std(s["reach"], 2, "x"), escape_cell(timed_text)])


# ---- plots and CSV -----------------------------------------------------------------------------

def _static_points(by_method: dict[str, list[ComparisonCell]],
                   point: Callable[[ComparisonCell], tuple | None]) -> list[tuple[float, float, str]]:
    """Per static-k method, ``(mean x, mean y, "k")`` of ``point(cell)`` over its ok seeds that have one."""
    out = []
    for method, cells in by_method.items():
        pts = [point(c) for c in cells if c.is_static and c.ok]
        pts = [p for p in pts if p is not None]
        if pts:
            out.append((float(np.mean([p[0] for p in pts])), float(np.mean([p[1] for p in pts])), str(static_depth(method))))
    return out


def _static_timed(c: ComparisonCell) -> tuple | None:
    pts = c.timed
    return (pts[0][1].wallclock_speedup, pts[0][1].test_quality) if pts else None


def _static_wall_vs_layer(c: ComparisonCell) -> tuple | None:
    pts = c.timed
    return (pts[0][1].layer_speedup, pts[0][1].wallclock_speedup) if pts else None


def _early_ok(by_method: dict[str, list[ComparisonCell]]) -> dict[str, list[ComparisonCell]]:
    return {m: [c for c in cells if c.ok] for m, cells in by_method.items() if not is_static(m)}


def _metric(by_method: dict[str, list[ComparisonCell]], default: str) -> str:
    """The first metric a cell of the task names, else ``default``."""
    return next((c.metric for cells in by_method.values() for c in cells if c.metric), default)


def full_model_quality(by_method: dict[str, list[ComparisonCell]]) -> float | None:
    """Mean test quality of the static cell with the largest k if k = L (test layer speed-up 1), else None."""
    static = {m: [c for c in cells if c.ok and c.points] for m, cells in by_method.items() if is_static(m)}
    static = {m: cells for m, cells in static.items() if cells}
    if not static:
        return None
    deepest = static[max(static, key=static_depth)]
    if any(abs(c.points[0]["test"]["layer_speedup"] - 1.0) > 1e-6 for c in deepest):
        return None
    return float(np.mean([c.summary.full_test for c in deepest]))


def _mean_std_xy(values: list[tuple[float, float]]) -> tuple[float, float, float, float] | None:
    """``(mean x, mean y, std x, std y)`` over seeds (std 0 with one seed); None without values."""
    if not values:
        return None
    xs, ys = np.array([v[0] for v in values]), np.array([v[1] for v in values])
    sd = lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
    return float(xs.mean()), float(ys.mean()), sd(xs), sd(ys)


def _static_band(ax, points: list[tuple[float, float, float, float, str]]) -> None:
    """The static line through the static-k seed means, a band of ± one seed std around it."""
    points = sorted(points)
    if not points:
        return
    xs, ys, sds = [p[0] for p in points], [p[1] for p in points], [p[3] for p in points]
    ax.plot(xs, ys, markersize=5, linewidth=1.2, **STATIC_STYLE)
    ax.fill_between(xs, [y - s for y, s in zip(ys, sds)], [y + s for y, s in zip(ys, sds)], color=STATIC_STYLE["color"],
                    alpha=0.15, linewidth=0, label="static ± seed std")
    for x, y, _, _, k in points:
        ax.annotate(k, (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7, color="dimgray")


def pareto_figure(task: str, by_method: dict[str, list[ComparisonCell]], styles: dict[str, tuple[str, str]],
                  speedups: tuple[float, ...] = TARGET_SPEEDUPS):
    """One task on TEST, two panels; points only, never lines through dev-chosen points (their test
    numbers need not form a front): (a) each method's quality read at each target layer speed-up on its
    dev-chosen front, mean over seeds with a ± std error bar (the table's numbers; methods nudged
    apart in x); (b) each criterion's dev operating point timed at batch 32: mean wall-clock speed-up and
    test quality with seed error bars on both. The static line (static-k seed means, each at its own
    speed-up) with a ± std band; the full model (static-L) dotted. Unsaved Figure."""
    early = _early_ok(by_method)
    fig, (ax_layer, ax_wall) = plt.subplots(1, 2, figsize=(2 * 4.8 + 2.3, 4.4))
    width = 0.04 * (max(speedups) - min(speedups) or 1.0)
    for i, (method, cells) in enumerate(early.items()):
        colour, marker = styles[method]
        fronts = [dev_chosen_front(c.points) for c in cells]
        shift = (i - (len(early) - 1) / 2) * width / max(1, len(early))
        at = [(t, mean_std([quality_at(f, t) for f in fronts])) for t in speedups]
        at = [(t, a) for t, a in at if a["mean"] is not None]
        if at:
            ax_layer.errorbar([t + shift for t, _ in at], [a["mean"] for _, a in at], yerr=[a["std"] or 0.0 for _, a in at],
                              color=colour, marker=marker, linestyle="none", markersize=5, capsize=2, label=method)
        criteria = sorted({k for c in cells for k, _ in c.timed})
        for criterion in criteria:
            point = _mean_std_xy([(t.wallclock_speedup, t.test_quality) for c in cells for k, t in c.timed if k == criterion])
            ax_wall.errorbar([point[0]], [point[1]], xerr=[point[2]], yerr=[point[3]], color=colour, marker=marker,
                             linestyle="none", markersize=4, capsize=2, alpha=0.8, label=method)
    for ax, point in ((ax_layer, _static_layer_point), (ax_wall, _static_timed)):
        static = []
        for method, cells in by_method.items():
            if is_static(method):
                agg = _mean_std_xy([p for p in (point(c) for c in cells if c.ok) if p is not None])
                if agg is not None:
                    static.append((*agg, str(static_depth(method))))
        _static_band(ax, static)
    full = full_model_quality(by_method)
    metric = _metric(by_method, "quality")
    for ax, xlabel in ((ax_layer, XLABELS["layer_speedup"] + ", test"), (ax_wall, XLABELS["wallclock_speedup"])):
        if full is not None:
            ax.axhline(full, color="black", linestyle=":", linewidth=1, label="full model (static-L)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {metric} (%)")
        ax.grid(alpha=0.3)
    ax_layer.set_title("quality at each target (dev-chosen front), mean ± seed std", fontsize=8)
    ax_wall.set_title("timed dev operating points, mean ± seed std", fontsize=8)
    seeds = len({c.seed for cs in early.values() for c in cs})
    fig.suptitle(f"{task}: test numbers of dev-chosen points ({seeds} seed{'' if seeds == 1 else 's'})",
                 fontsize=10)
    legend_right(fig)
    legend = fig.legends[0]  # matplotlib lists error bars after lines: the methods first, in their order
    pairs = dict(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))
    order = [m for m in styles if m in pairs] + [label for label in pairs if label not in styles]
    legend.remove()
    fig.legend([pairs[label] for label in order], order, loc="center left",
               bbox_to_anchor=(fig.subplotpars.right + 0.01, 0.5), fontsize=7, frameon=False)
    return fig


def _static_layer_point(c: ComparisonCell) -> tuple | None:
    pts = c.points
    return (pts[0]["test"]["layer_speedup"], pts[0]["test"]["quality"]) if pts else None


def wallclock_figure(task: str, by_method: dict[str, list[dict]], styles: dict[str, tuple[str, str]]):
    """Measured batch-32 wall-clock speed-up vs test layer speed-up of every timed point (every
    seed), the line y = x dashed. Unsaved Figure."""
    points = {m: [(t.layer_speedup, t.wallclock_speedup) for c in cells for _, t in c.timed]
              for m, cells in _early_ok(by_method).items()}
    return speedup_scatter(points, styles, _static_points(by_method, _static_wall_vs_layer), XLABELS["layer_speedup"],
                           XLABELS["wallclock_speedup"], f"{task}: measured vs layer speed-up")


def pareto_csv(by_method: dict[str, list[dict]]) -> str:
    """CSV rows (DVC plots): every ok seed's dev-chosen front points (``source`` = front; no wall-clock)
    and timed points (``source`` = timed), with test quality and speed-ups."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "criterion", "seed", "source", "test_quality", "layer_speedup", "flops_speedup", "wallclock_speedup"])
    r = lambda v: "" if v is None else round(v, 4)  # noqa: E731
    for method, cells in by_method.items():
        for c in (c for c in cells if c.ok):
            for p in dev_chosen_front(c.points):
                t = p["test"]
                w.writerow([method, p["criterion"], c.seed, "front", r(t["quality"]), r(t["layer_speedup"]),
                            r(t["flops_speedup"]), ""])
            for criterion, t in c.timed:
                w.writerow([method, criterion, c.seed, "timed", r(t.test_quality), r(t.layer_speedup),
                            r(t.flops_speedup), r(t.wallclock_speedup)])
    return buf.getvalue()


def static_line_at(by_method: dict[str, list[dict]], speedups: tuple[float, ...]) -> dict[str, dict]:
    """The static baselines as one reference curve per seed (every static-k point of the seed,
    dev-chosen front as for a method), read at each target: ``{"2x": mean_std over seeds}``."""
    by_seed: dict[int, list[dict]] = {}
    for cells in by_method.values():
        for c in cells:
            if c.is_static and c.ok:
                by_seed.setdefault(c.seed, []).extend(c.points)
    fronts = [dev_chosen_front(points) for _, points in sorted(by_seed.items())]
    return {target_label(t): mean_std([quality_at(f, t) for f in fronts]) for t in speedups}


# ---- the report --------------------------------------------------------------------------------

def _method_order(method: str) -> tuple[bool, int]:
    """Sort key: the early-exit methods (in their given order, the sort being stable), then static-k by k."""
    return is_static(method), static_depth(method) or 0


def _group(cells: list[ComparisonCell]) -> dict[str, dict[str, list[ComparisonCell]]]:
    """``{task: {method: cells}}``: tasks in order of appearance; per task the early-exit methods in
    order of appearance, then the static-k methods by k."""
    grouped: dict[str, dict[str, list[ComparisonCell]]] = {}
    for c in cells:
        grouped.setdefault(c.task, {}).setdefault(c.method, []).append(c)
    return {t: dict(sorted(by_method.items(), key=lambda item: _method_order(item[0]))) for t, by_method in grouped.items()}


def _overall(summaries: dict[str, dict[str, dict]], auc_label: str) -> tuple[str, dict, dict]:
    """The method x task AUC table (markdown) with the early-exit methods' average rank; returns
    ``(markdown, {method: {task: AUC aggregate}}, average_ranks)``."""
    tasks = list(summaries)
    methods = sorted({m: None for by_method in summaries.values() for m in by_method}, key=_method_order)
    auc = {m: {t: summaries[t][m]["auc"] for t in tasks if m in summaries[t] and summaries[t][m]["status"]["ok"]}
           for m in methods}
    ranked = {m: {t: a for t, a in by_task.items() if not summaries[t][m].get("flagged")} for m, by_task in auc.items()}
    ranks = average_ranks({m: a for m, a in ranked.items() if not is_static(m)}, tasks)

    def cell(m: str, t: str) -> str:
        s = summaries[t].get(m)
        if s is None:
            return ""
        if not s["status"]["ok"]:
            return next(status for status in ("n/a", "failed", "pending") if s["status"][status])  # a failed seed outranks one not run yet
        return format_mean_std(s["auc"]) + (" (flagged)" if s.get("flagged") else "")

    def rank(m: str) -> str:
        r = ranks.get(m)
        if r is None or r["mean"] is None:
            return "—"
        return f"{r['mean']:.2f}" + (f" ({r['tasks']}/{len(tasks)} tasks)" if r["tasks"] < len(tasks) else "")

    text = (f"## Overall: {auc_label} (mean ± std over seeds) and the early-exit methods' average rank "
            "(1 = best, ties share; static rows for reference). A rank orders means and is not a claim: two methods "
            "differ only where a claim table above shows an interval that excludes 0\n\n"
            + markdown_table(["method"] + tasks + ["average rank"], [[m] + [cell(m, t) for t in tasks] + [rank(m)] for m in methods])
            + "\n")
    return text, auc, ranks


PER_TASK_FILES = ("pareto-{task}.png", "wallclock-{task}.png", "pareto-{task}.csv")  # what compare_report writes per task


def compare_report(cells: list[ComparisonCell], speedups: tuple[float, ...] = TARGET_SPEEDUPS, *, out_dir: Path,
                   auc_range: tuple[float, float] = (1.0, 3.0), rows_root: Path | None = None, flag_gap: float = FLAG_GAP,
                   resamples: int = 2000, notes: list[str] = ()) -> dict:
    """Writes the comparison report of finished grid cells into ``out_dir``.

    ``cells``: ``tasks.reports.cells.ComparisonCell``; a static baseline's cell has one criterion
    with one point (layer speed-up L/k).

    Writes ``compare.json`` (per task, per method: ``summarise_method``'s numbers with the raw cells;
    overall AUC and average ranks), ``compare.md``, and per task ``pareto-<task>.png`` /
    ``pareto-<task>.csv`` / ``wallclock-<task>.png``. Failed and n/a cells are reported, never dropped.
    Claims carry paired bootstrap intervals over the cells' per-row test predictions
    (``tasks.reports.claims``; relative ``test_rows`` paths resolve against ``rows_root``); a cell at
    chance or more than ``flag_gap`` dev points below the full model is flagged: shown, never ranked
    nor claimed. ``notes``: sentences printed under the selection (e.g. how the learning rate was chosen).
    Returns ``{"json", "markdown", "plots": {task: path}, "wallclock_plots": {task: path}, "table"}``.
    """
    out_dir = Path(out_dir)
    grouped = _group(cells)
    tasks = list(grouped)
    styles = method_styles(list(dict.fromkeys(c.method for c in cells if not c.is_static)))
    flags = {t: flag_reasons(by_method, flag_gap) for t, by_method in grouped.items()}
    summaries = {t: {m: {**summarise_method(cs, speedups, auc_range),
                         "flagged": [{"seed": c.seed, "why": flags[t][(m, c.seed)]} for c in cs if (m, c.seed) in flags[t]]}
                     for m, cs in by_method.items()}
                 for t, by_method in grouped.items()}
    rows = rows_loader(rows_root)
    auc_label = f"AUC[{auc_range[0]:g},{auc_range[1]:g}]"
    head = (["method", "status", "lr (chosen)", "full test"] + [f"test @ {target_label(t)}" for t in speedups]
            + [auc_label, "reach", "timed b32 wall-clock @ test quality (criterion)"])
    sections, plots, wallclock_plots, claims = [], {}, {}, {}
    for task, by_method in grouped.items():
        plots[task] = str(_save(pareto_figure(task, by_method, styles, speedups), out_dir / f"pareto-{task}.png"))
        wallclock_plots[task] = str(_save(wallclock_figure(task, by_method, styles), out_dir / f"wallclock-{task}.png"))
        atomic_write_text(out_dir / f"pareto-{task}.csv", pareto_csv(by_method))
        full = full_model_quality(by_method)
        metric = _metric(by_method, "?")
        claims[task] = claims_for_task(by_method, speedups, rows, flags[task], resamples)
        claims_md = claims_markdown(claims[task], speedups)
        sections.append(f"## {task} ({metric})\n\n" + markdown_table(head, [_row(m, s) for m, s in summaries[task].items()])
                        + ("" if full is None else f"\n\nFull model (static-L, test): {full:.1f}")
                        + "\n\n" + claims_md
                        + f"\n\n![{task} Pareto](pareto-{task}.png) ![{task} wall-clock](wallclock-{task}.png)\n")
    overall, auc, ranks = _overall(summaries, auc_label)
    table = "# exitflow compare\n\n" + " ".join([SELECTION, INTERVALS, *notes]) + "\n\n" + "\n".join(sections) + "\n" + overall
    json_path = atomic_write_json(out_dir / "compare.json", {
        "selection": SELECTION, "intervals": INTERVALS, "notes": list(notes), "speedups": list(speedups),
        "auc_range": list(auc_range),
        "tasks": {t: {"full_model": full_model_quality(grouped[t]), "methods": summaries[t],
                      "against_static": claims[t]["against_static"], "claims": claims[t]["named"],
                      "layerwise_claims": claims[t]["layerwise"]}
                  for t in tasks},
        "overall": {"auc": auc, "average_rank": ranks}})
    md_path = atomic_write_text(out_dir / "compare.md", table)
    for kind in PER_TASK_FILES:  # a task of an earlier report that this one does not hold: its files go
        for path in out_dir.glob(kind.format(task="*")):
            if not any(path.name == kind.format(task=t) for t in tasks):
                path.unlink()
    return {"json": str(json_path), "markdown": str(md_path), "plots": plots, "wallclock_plots": wallclock_plots,
            "table": table}
