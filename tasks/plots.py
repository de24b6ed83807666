"""Trade-off and layer-wise plots (PNG, matplotlib Agg; no timestamps, so files are reproducible)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tasks.io import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def tradeoff_plot(curves: dict[str, list[dict]], full_quality: float, title: str, path: Path,
                  x: str = "flops_speedup") -> Path:
    """Quality vs speed-up, one curve per method; ``curves[name]`` = points with ``quality`` and ``x``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, points in sorted(curves.items()):
        pts = sorted(points, key=lambda p: p[x])
        ax.plot([p[x] for p in pts], [p["quality"] for p in pts], marker="o", markersize=3, label=name)
    ax.axhline(full_quality, color="black", linestyle="--", linewidth=1, label="full model")
    ax.set_xlabel({"flops_speedup": "FLOPs speed-up (x)", "layer_speedup": "layer speed-up L/avg (x)"}.get(x, x))
    ax.set_ylabel("quality (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


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
