"""Task: the comparison report across strategies: one table (Markdown + JSON) and one plot."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from tasks.io import atomic_write_json, atomic_write_text
from tasks.plots import layerwise_plot, tradeoff_plot


def results_table(summaries: dict[str, dict], timing_bs: list[int], hashee: dict | None = None) -> list[dict]:
    """One row per (strategy, criterion) at its dev-selected operating point, plus full models and HashEE."""
    rows = []
    if hashee is not None:
        rows.append({"strategy": "single (full model)", "criterion": "full model", "threshold": None,
                     "test_quality": hashee["full_test_quality"], "avg_exit_layer": hashee["backbone_layers"],
                     "layer_speedup": 1.0, "flops_speedup": 1.0, **{f"wallclock_bs{b}": 1.0 for b in timing_bs}})
        rows.append({"strategy": "hashee (token-level)", "criterion": f"{hashee['kind']} hash, B={hashee['buckets']}",
                     "threshold": None, "test_quality": hashee["test_quality"],
                     "avg_exit_layer": hashee["avg_token_exit_layer"], "layer_speedup": hashee["layer_speedup"],
                     "flops_speedup": hashee["flops_speedup"],
                     **{f"wallclock_bs{b}": hashee.get(f"wallclock_speedup_bs{b}") for b in timing_bs}})
    for strategy, s in summaries.items():
        rows.append({"strategy": strategy, "criterion": "full model", "threshold": None,
                     "test_quality": s["full"]["test_quality"], "avg_exit_layer": s["num_layers"],
                     "layer_speedup": 1.0, "flops_speedup": 1.0, **{f"wallclock_bs{b}": 1.0 for b in timing_bs}})
        for name, op in s["operating_points"].items():
            rows.append({"strategy": strategy, "criterion": name, "threshold": op["threshold"],
                         "test_quality": op["test"]["quality"], "avg_exit_layer": op["test"]["avg_exit_layer"],
                         "layer_speedup": op["test"]["layer_speedup"], "flops_speedup": op["test"]["flops_speedup"],
                         **{f"wallclock_bs{b}": op.get(f"wallclock_speedup_bs{b}") for b in timing_bs}})
    return rows


def markdown_table(rows: list[dict], timing_bs: list[int]) -> str:
    head = ["strategy", "criterion", "threshold", "test quality", "avg exit layer", "layer speed-up", "FLOPs speed-up"]
    head += [f"wall-clock speed-up bs={b}" for b in timing_bs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        cells = [r["strategy"], r["criterion"], fmt(r["threshold"], 3), fmt(r["test_quality"]), fmt(r["avg_exit_layer"]),
                 fmt(r["layer_speedup"]), fmt(r["flops_speedup"])] + [fmt(r[f"wallclock_bs{b}"]) for b in timing_bs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@task(name="build_report")
def build_report(eval_dirs: dict[str, Path], timing_bs: list[int], out_dir: Path, hashee_dir: Path | None = None) -> dict:
    """Collect every strategy's ``metrics.json``/``curves.json`` (and HashEE's) into one table and plots.

    HashEE rows are token-level: their "avg exit layer" is the mean token exit layer.
    """
    summaries, curves = {}, {}
    for strategy, d in eval_dirs.items():
        summaries[strategy] = json.loads((Path(d) / "metrics.json").read_text())
        for name, points in json.loads((Path(d) / "curves.json").read_text()).items():
            curves[f"{strategy}/{name}"] = [p["test"] for p in points]
    hashee = None
    if hashee_dir is not None and (Path(hashee_dir) / "metrics.json").exists():
        hashee = json.loads((Path(hashee_dir) / "metrics.json").read_text())
        curves[f"hashee/{hashee['kind']}"] = [{"quality": hashee["test_quality"], "flops_speedup": hashee["flops_speedup"]}]
    rows = results_table(summaries, timing_bs, hashee)
    table = markdown_table(rows, timing_bs)
    relative = None
    if hashee is not None:  # BERxiT: layer-wise scores relative to the single-exit fine-tuned full model
        base = hashee["full_test_quality"]
        relative = {s: [100.0 * v / base for v in summ["layerwise"]["test"]] for s, summ in summaries.items()}
        L = len(next(iter(relative.values())))
        table += (f"\nLayer-wise test score relative to the single-exit fine-tuned model ({base:.2f} = 100%):\n\n"
                  "| strategy | " + " | ".join(f"layer {k}" for k in range(1, L + 1)) + " |\n|---|" + "---|" * L + "\n"
                  + "".join(f"| {s} | " + " | ".join(f"{v:.1f}" for v in vals) + " |\n" for s, vals in relative.items()))
    task_name = next(iter(summaries.values()))["task"]
    best_full = max(s["full"]["test_quality"] for s in summaries.values())
    tradeoff_plot(curves, best_full, f"{task_name}: test quality vs FLOPs speed-up", out_dir / "tradeoff.png")
    layerwise_plot({s: v["layerwise"]["test"] for s, v in summaries.items()}, f"{task_name}: layer-wise test scores",
                   out_dir / "layerwise.png")
    atomic_write_text(out_dir / "results.md", table)
    atomic_write_json(out_dir / "results.json", {"task": task_name, "rows": rows, "relative_layerwise": relative})
    return {"table": table, "rows": rows, "relative_layerwise": relative, "plot": str(out_dir / "tradeoff.png"),
            "layerwise_plot": str(out_dir / "layerwise.png"), "dir": str(out_dir)}


def hashee_row(name: str, m: dict) -> dict:
    return {"hash": name, "quality": m["test_quality"], "full_quality": m["full_test_quality"],
            "flops_speedup": m["flops_speedup"], "flops_speedup_vs_12_layers": m["flops_speedup_vs_12_layers"],
            **{k: v for k, v in m.items() if k.startswith("wallclock_speedup_bs")}}


def hashee_study_report(summaries: dict[str, dict], out_dir: Path) -> dict:
    """Study table (hash, quality, FLOPs and measured speed-ups) and a quality vs speed-up plot."""
    rows = [hashee_row(name, m) for name, m in summaries.items()]
    walls = sorted({k for r in rows for k in r if k.startswith("wallclock")})
    head = ["hash", "test quality", "full model", "FLOPs speed-up", "FLOPs speed-up vs 12L"] + [w.replace("wallclock_speedup_", "wall-clock ") for w in walls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["hash"], f"{r['quality']:.2f}", f"{r['full_quality']:.2f}", f"{r['flops_speedup']:.2f}",
                                        f"{r['flops_speedup_vs_12_layers']:.2f}"] + [f"{r[w]:.2f}" for w in walls]) + " |")
    table = "\n".join(lines) + "\n"
    full = next(iter(summaries.values()))["full_test_quality"]
    curves = {r["hash"]: [{"quality": r["quality"], "flops_speedup": r["flops_speedup"]}] for r in rows}
    tradeoff_plot(curves, full, "HashEE: test quality vs FLOPs speed-up", out_dir / "tradeoff.png")
    atomic_write_text(out_dir / "results.md", table)
    atomic_write_json(out_dir / "results.json", {"rows": rows})
    return {"table": table, "rows": rows, "plot": str(out_dir / "tradeoff.png")}
