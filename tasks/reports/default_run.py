"""The default run's report (``exitflow report``): every strategy's operating points, the full models and
HashEE in one table (Markdown + JSON), the wall-clock columns in ``timing.json``, and two plots."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from tasks.io import TIMING_FILE, atomic_write_json, atomic_write_text, read_metrics
from tasks.plots import layerwise_plot, tradeoff_plot
from tasks.reports.tables import markdown_table


def results_table(summaries: dict[str, dict], timing_bs: list[int], hashee: dict | None = None) -> list[dict]:
    """One row per (strategy, criterion) at its dev-selected operating point, plus full models and HashEE."""
    rows = []
    if hashee is not None:
        rows.append({"strategy": "single (full model)", "criterion": "full model", "threshold": None,
                     "test_quality": hashee["full_test_quality"], "avg_exit_layer": hashee["backbone_layers"],
                     "layer_speedup": 1.0, "flops_speedup": 1.0, "timed_layer_speedup": 1.0,
                     **{f"wallclock_bs{b}": 1.0 for b in timing_bs}})
        rows.append({"strategy": "hashee (token-level)", "criterion": f"{hashee['kind']} hash, B={hashee['buckets']}",
                     "threshold": None, "test_quality": hashee["test_quality"],
                     "avg_exit_layer": hashee["avg_token_exit_layer"], "layer_speedup": hashee["layer_speedup"],
                     "flops_speedup": hashee["flops_speedup"], "timed_layer_speedup": hashee.get("timed_layer_speedup"),
                     **{f"wallclock_bs{b}": hashee.get(f"wallclock_speedup_bs{b}") for b in timing_bs}})
    for strategy, s in summaries.items():
        rows.append({"strategy": strategy, "criterion": "full model", "threshold": None,
                     "test_quality": s["full"]["test_quality"], "avg_exit_layer": s["num_layers"],
                     "layer_speedup": 1.0, "flops_speedup": 1.0, "timed_layer_speedup": 1.0,
                     **{f"wallclock_bs{b}": 1.0 for b in timing_bs}})
        for name, op in s["operating_points"].items():
            rows.append({"strategy": strategy, "criterion": name, "threshold": op["threshold"],
                         "test_quality": op["test"]["quality"], "avg_exit_layer": op["test"]["avg_exit_layer"],
                         "layer_speedup": op["test"]["layer_speedup"], "flops_speedup": op["test"]["flops_speedup"],
                         "timed_layer_speedup": op.get("timed_layer_speedup"),
                         **{f"wallclock_bs{b}": op.get(f"wallclock_speedup_bs{b}") for b in timing_bs}})
    return rows


def results_markdown(rows: list[dict], timing_bs: list[int]) -> str:
    """``results_table``'s rows as Markdown, with a wall-clock column per batch size in ``timing_bs``."""
    head = ["strategy", "criterion", "threshold", "test quality", "avg exit layer", "layer speed-up", "FLOPs speed-up",
            "layer speed-up (timed rows)"]
    head += [f"wall-clock speed-up bs={b}" for b in timing_bs]
    fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    cells = [[r["strategy"], r["criterion"], fmt(r["threshold"], 3), fmt(r["test_quality"]), fmt(r["avg_exit_layer"]),
              fmt(r["layer_speedup"]), fmt(r["flops_speedup"]), fmt(r.get("timed_layer_speedup"))]
             + [fmt(r[f"wallclock_bs{b}"]) for b in timing_bs] for r in rows]
    return markdown_table(head, cells) + "\n"


def chance_warnings(summaries: dict[str, dict]) -> str:
    """A bold warning paragraph per strategy whose full-depth model is at chance level on dev."""
    return "".join(f"**WARNING: {s} is at chance level on dev** (full-depth score {c['score']:.2f} vs majority class "
                   f"{c['majority_score']:.2f}, loss {c['loss']:.4f} vs {c['chance_loss']:.4f}): its speed-ups are "
                   "meaningless; try another train.lr or more train.epochs.\n\n"
                   for s, c in ((s, summ.get("dev_chance_check")) for s, summ in summaries.items()) if c and c["at_chance"])


def layerwise_markdown(relative: dict[str, list[float]], base: float) -> str:
    """The layer-wise test scores relative to the single-exit fine-tuned model (``base`` = 100%)."""
    L = len(next(iter(relative.values())))
    rows = [[s] + [f"{v:.1f}" for v in vals] for s, vals in relative.items()]
    return (f"\nLayer-wise test score relative to the single-exit fine-tuned model ({base:.2f} = 100%):\n\n"
            + markdown_table(["strategy"] + [f"layer {k}" for k in range(1, L + 1)], rows) + "\n")


@task(name="build_report")
def build_report(eval_dirs: dict[str, Path], timing_bs: list[int], out_dir: Path, hashee_dir: Path | None = None) -> dict:
    """Collect every strategy's ``metrics.json``/``curves.json`` (and HashEE's) into one table and plots.

    HashEE rows are token-level: their "avg exit layer" is the mean token exit layer.
    ``results.md``/``results.json`` leave the wall-clock columns out (they go to ``timing.json``),
    so they are the same on every machine; the returned ``table`` has them.
    """
    summaries, curves = {}, {}
    for strategy, d in eval_dirs.items():
        summaries[strategy] = read_metrics(d)  # with the wall-clock numbers of timing.json
        for name, points in json.loads((Path(d) / "curves.json").read_text()).items():
            curves[f"{strategy}/{name}"] = [p["test"] for p in points]
    hashee = None
    if hashee_dir is not None and (Path(hashee_dir) / "metrics.json").exists():
        hashee = read_metrics(hashee_dir)
        curves[f"hashee/{hashee['kind']}"] = [{"quality": hashee["test_quality"], "flops_speedup": hashee["flops_speedup"]}]
    rows = results_table(summaries, timing_bs, hashee)
    table = chance_warnings(summaries)
    untimed = table + results_markdown(rows, [])  # results.md: what any machine reproduces byte for byte
    table += results_markdown(rows, timing_bs)
    relative = None
    if hashee is not None:  # BERxiT: layer-wise scores relative to the single-exit fine-tuned full model
        base = hashee["full_test_quality"]
        relative = {s: [100.0 * v / base for v in summ["layerwise"]["test"]] for s, summ in summaries.items()}
        layer_table = layerwise_markdown(relative, base)
        table, untimed = table + layer_table, untimed + layer_table
    task_name = next(iter(summaries.values()))["task"]
    best_full = max(s["full"]["test_quality"] for s in summaries.values())
    tradeoff_plot(curves, best_full, f"{task_name}: test quality vs FLOPs speed-up", out_dir / "tradeoff.png")
    layerwise_plot({s: v["layerwise"]["test"] for s, v in summaries.items()}, f"{task_name}: layer-wise test scores",
                   out_dir / "layerwise.png")
    # wall-clock columns differ between machines and runs: timing.json, not results.md / results.json
    wall = [{"strategy": r["strategy"], "criterion": r["criterion"], **{k: v for k, v in r.items() if k.startswith("wallclock")}}
            for r in rows]
    atomic_write_text(out_dir / "results.md", untimed)
    atomic_write_json(out_dir / "results.json", {"task": task_name, "relative_layerwise": relative,
                                                 "rows": [{k: v for k, v in r.items() if not k.startswith("wallclock")} for r in rows]})
    atomic_write_json(out_dir / TIMING_FILE, {"rows": wall})
    return {"table": table, "rows": rows, "relative_layerwise": relative, "plot": str(out_dir / "tradeoff.png"),
            "layerwise_plot": str(out_dir / "layerwise.png"), "dir": str(out_dir)}
