"""Trade-off and layer-wise plots (PNG, matplotlib Agg; no timestamps, so files are reproducible)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from models.operating import pareto_front  # noqa: E402
from tasks.io import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def tradeoff_plot(curves: dict[str, list[dict]], full_quality: float, title: str, path: Path,
                  x: str = "flops_speedup") -> Path:
    """Quality vs speed-up: per series (``curves[name]`` = point dicts with ``quality`` and ``x``)
    its Pareto front (both maximised) as a line sorted by ``x``, the raw points as faint markers;
    a distinct colour and marker per series (``method_styles``), the legend outside on the right."""

    names = sorted(curves)
    panel = {"xlabel": XLABELS.get(x, x),
             "lines": {n: [[(p[x], p["quality"]) for p in pareto_front(curves[n], x, "quality")]] for n in names},
             "points": {n: [(p[x], p["quality"]) for p in curves[n]] for n in names}}
    return _save(tradeoff_panels([panel], method_styles(names), "quality (%)", title, (full_quality, "full model")), path)


def layerwise_plot(scores: dict[str, list[float]], title: str, path: Path, xlabel: str = "exit layer",
                   ylabel: str = "quality (%)") -> Path:
    """Curves over layers 1..L (every row forced to exit at layer k), or any 1-based x such as epochs."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, values in sorted(scores.items()):
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def bar_plot(x: list, heights: list[float], xlabel: str, ylabel: str, title: str, path: Path,
             reference: float | None = None, reference_label: str = "") -> Path:
    """A simple bar chart (optionally with a horizontal reference line)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.bar([str(v) for v in x], heights, color="tab:blue")
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1, label=reference_label)
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def grouped_bar_plot(groups: dict[str, dict[str, float | None]], ylabel: str, title: str, path: Path,
                     reference: str | None = None) -> Path:
    """Bars per group (e.g. study) and member (e.g. predictor); ``reference`` members are hatched.
    Missing values (None) are left out."""
    members = list(dict.fromkeys(m for g in groups.values() for m in g))
    width = 0.8 / max(1, len(members))
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for j, member in enumerate(members):
        xs = [i + j * width for i, g in enumerate(groups.values()) if g.get(member) is not None]
        ys = [g[member] for g in groups.values() if g.get(member) is not None]
        ax.bar(xs, ys, width, label=member, hatch="//" if member == reference else None,
               edgecolor="black" if member == reference else None)
    ax.set_xticks([i + width * (len(members) - 1) / 2 for i in range(len(groups))], list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def architecture_heatmap(trajectory: list[list[dict[str, dict[str, float]]]], title: str, path: Path) -> Path:
    """LECO architecture weights: one panel per layer, a row per ``choice: op``, a column per
    epoch, colour = the candidate's softmax weight within its choice."""
    layers = trajectory[0]
    rows = [(choice, op) for choice, ops in layers[0].items() for op in ops]
    fig, axes = plt.subplots(1, len(layers), figsize=(1.2 + 1.0 * len(layers) + 0.35 * len(trajectory) * len(layers), 0.22 * len(rows) + 1.6),
                             sharey=True, squeeze=False)
    for k, ax in enumerate(axes[0]):
        grid = [[epoch[k][choice].get(op, 0.0) for epoch in trajectory] for choice, op in rows]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"layer {k + 1}", fontsize=8)
        ax.set_xticks(range(len(trajectory)), [str(e) for e in range(1, len(trajectory) + 1)], fontsize=6)
        ax.set_xlabel("epoch", fontsize=7)
    axes[0][0].set_yticks(range(len(rows)), [f"{choice}: {op}" for choice, op in rows], fontsize=6)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.02, label="weight")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


MARKERS = "osD^vP*Xh<>"


def curve_plot(curves: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str, path: Path,
               reference: float | None = None, others: dict[str, list[tuple[float, float]]] | None = None,
               others_xlabel: str | None = None) -> Path:
    """One line per method through its ``(x, y)`` points sorted by x, a distinct colour and
    marker each, the legend outside; ``others`` adds a second panel with the same methods on
    another x axis; ``reference`` draws a dashed quality bar."""
    panels = [(curves, xlabel)] + ([(others, others_xlabel)] if others else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.6, 4.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (series, label) in zip(axes[0], panels):
        for i, (name, pts) in enumerate(sorted(series.items())):
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=MARKERS[i % len(MARKERS)], color=colours(i % 10),
                    markersize=4, label=name)
        if reference is not None:
            ax.axhline(reference, color="black", linestyle="--", linewidth=1, label=f"{ylabel} = {reference:g}")
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title)
    return _save(fig, path)


# ---- shared styles and multi-panel trade-off figures (comparison report, tradeoff_plot) ----

XLABELS = {"flops_speedup": "FLOPs speed-up (x)", "layer_speedup": "layer speed-up L/avg (x)",
           "wallclock_speedup": "measured wall-clock speed-up, batch 32 (x)"}
# tab20 without its two greys (grey is kept for the static baselines), dark shades first: 18 colours
_TAB20 = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab20").colors]
STYLE_COLOURS = [c for i, c in enumerate(_TAB20) if i % 2 == 0 and i != 14] + \
                [c for i, c in enumerate(_TAB20) if i % 2 == 1 and i != 15]
STATIC_STYLE = {"color": "dimgray", "linestyle": "--", "marker": "x", "label": "static (first k layers)"}


def method_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """``{name: (colour hex, marker)}`` in the order given. Colours are distinct for up to 18 names
    and markers for up to 11; the (colour, marker) pair is distinct for up to lcm(18, 11) = 198."""
    return {n: (STYLE_COLOURS[i % len(STYLE_COLOURS)], MARKERS[i % len(MARKERS)]) for i, n in enumerate(names)}


def legend_right(fig) -> None:
    """One figure legend (labels of every axes, first handle per label) outside the axes on the right."""
    seen = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    right = 1.0 - 2.3 / fig.get_figwidth()  # ~2.3 inches for the legend
    fig.subplots_adjust(right=right, wspace=0.3)
    fig.legend(list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(right + 0.01, 0.5),
               fontsize=7, frameon=False)


def tradeoff_panels(panels: list[dict], styles: dict[str, tuple[str, str]], ylabel: str, title: str,
                    reference: tuple[float, str] | None = None):
    """Side-by-side panels sharing one legend outside on the right; returns the Figure (unsaved).

    A panel is ``{"xlabel": str, "lines": {name: [[(x, y), ...], ...]}, "points": {name: [(x, y), ...]},
    "static": [(x, y, "k"), ...]}`` (all but xlabel optional): each of a name's lines is drawn sorted
    by x in the name's style (only the first labelled), ``points`` as faint markers, ``static`` as one
    dashed grey line with each point annotated; ``reference = (y, label)`` is a dotted black line.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 2.3, 4.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for name, (colour, marker) in styles.items():
            raw = panel.get("points", {}).get(name, [])
            if raw:
                ax.scatter([p[0] for p in raw], [p[1] for p in raw], color=colour, marker=marker, s=10, alpha=0.25)
            for i, line in enumerate(panel.get("lines", {}).get(name, [])):
                line = sorted(line)
                ax.plot([p[0] for p in line], [p[1] for p in line], color=colour, marker=marker, markersize=4,
                        linewidth=1.2, label=name if i == 0 else None)
        static = sorted(panel.get("static", []))
        if static:
            ax.plot([p[0] for p in static], [p[1] for p in static], markersize=5, linewidth=1.2, **STATIC_STYLE)
            for sx, sy, k in static:
                ax.annotate(k, (sx, sy), textcoords="offset points", xytext=(3, 4), fontsize=7, color="dimgray")
        if reference is not None:
            ax.axhline(reference[0], color="black", linestyle=":", linewidth=1, label=reference[1])
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    legend_right(fig)
    return fig


def speedup_scatter(points: dict[str, list[tuple[float, float]]], styles: dict[str, tuple[str, str]],
                    static: list[tuple[float, float, str]], xlabel: str, ylabel: str, title: str):
    """Measured vs nominal speed-up: a name's ``(x, y)`` points in its style, ``static`` points grey
    and annotated, the line y = x dashed; returns the Figure (unsaved)."""
    fig, ax = plt.subplots(figsize=(4.8 + 2.3, 4.4))
    for name, (colour, marker) in styles.items():
        if points.get(name):
            ax.scatter([p[0] for p in points[name]], [p[1] for p in points[name]], color=colour, marker=marker,
                       s=22, label=name)
    if static:
        ax.scatter([p[0] for p in static], [p[1] for p in static], color=STATIC_STYLE["color"],
                   marker=STATIC_STYLE["marker"], s=28, label=STATIC_STYLE["label"])
        for sx, sy, k in static:
            ax.annotate(k, (sx, sy), textcoords="offset points", xytext=(3, 4), fontsize=7, color="dimgray")
    every = [v for pts in points.values() for p in pts for v in p] + [v for p in static for v in p[:2]]
    lo, hi = min(every + [1.0]), max(every + [1.0])
    ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=1, label="y = x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    legend_right(fig)
    return fig
