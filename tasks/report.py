"""Task: the comparison report across strategies: one table (Markdown + JSON) and one plot."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from models.operating import fastest_within
from tasks.io import TIMING_FILE, atomic_write_json, atomic_write_text, read_metrics
from tasks.plots import grouped_bar_plot, layerwise_plot, tradeoff_plot


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


def markdown_table(rows: list[dict], timing_bs: list[int]) -> str:
    head = ["strategy", "criterion", "threshold", "test quality", "avg exit layer", "layer speed-up", "FLOPs speed-up",
            "layer speed-up (timed rows)"]
    head += [f"wall-clock speed-up bs={b}" for b in timing_bs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        cells = [r["strategy"], r["criterion"], fmt(r["threshold"], 3), fmt(r["test_quality"]), fmt(r["avg_exit_layer"]),
                 fmt(r["layer_speedup"]), fmt(r["flops_speedup"]), fmt(r.get("timed_layer_speedup"))] + [fmt(r[f"wallclock_bs{b}"]) for b in timing_bs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    table = "".join(f"**WARNING: {s} is at chance level on dev** (full-depth score {c['score']:.2f} vs majority class "
                    f"{c['majority_score']:.2f}, loss {c['loss']:.4f} vs {c['chance_loss']:.4f}): its speed-ups are "
                    "meaningless; try another train.lr or more train.epochs.\n\n"
                    for s, c in ((s, summ.get("dev_chance_check")) for s, summ in summaries.items()) if c and c["at_chance"])
    untimed = table + markdown_table(rows, [])  # results.md: what any machine reproduces byte for byte
    table += markdown_table(rows, timing_bs)
    relative = None
    if hashee is not None:  # BERxiT: layer-wise scores relative to the single-exit fine-tuned full model
        base = hashee["full_test_quality"]
        relative = {s: [100.0 * v / base for v in summ["layerwise"]["test"]] for s, summ in summaries.items()}
        L = len(next(iter(relative.values())))
        layer_table = (f"\nLayer-wise test score relative to the single-exit fine-tuned model ({base:.2f} = 100%):\n\n"
                       "| strategy | " + " | ".join(f"layer {k}" for k in range(1, L + 1)) + " |\n|---|" + "---|" * L + "\n"
                       + "".join(f"| {s} | " + " | ".join(f"{v:.1f}" for v in vals) + " |\n" for s, vals in relative.items()))
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


def consistentee_report(cee_dir: Path, baseline_dirs: dict[str, Path], out_dir: Path, relative_loss: float = 0.01,
                        tau: float = 0.5) -> dict:
    """ConsistentEE vs the spine's criteria (paper claim: at <= 1% relative accuracy loss it saves
    more layers than the best baseline). Thresholds are chosen on dev; test numbers are reported.

    ``cee_dir``/``baseline_dirs`` are ``evaluate_exits`` output folders; every criterion on every
    model is a candidate (the ConsistentEE model's own entropy/patience too).
    """
    models = {"consistentee": Path(cee_dir), **{k: Path(v) for k, v in baseline_dirs.items()}}
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
    cee = json.loads((models["consistentee"] / "metrics.json").read_text())
    at_tau = cee["fixed_points"].get("policy")
    policy_rows = [r for r in rows if r["model"] == "consistentee" and r["criterion"] == "policy"]
    baseline_rows = [r for r in rows if not (r["model"] == "consistentee" and r["criterion"] == "policy")]
    best_baseline = max(baseline_rows, key=lambda r: r["saved_layers_pct"]) if baseline_rows else None
    holds = bool(policy_rows and best_baseline and policy_rows[0]["saved_layers_pct"] > best_baseline["saved_layers_pct"])
    head = ["model", "criterion", "threshold (dev)", "test quality", "full model", "relative loss %", "saved layers %",
            "layer speed-up", "FLOPs speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: -r["saved_layers_pct"]):
        lines.append("| " + " | ".join([r["model"], r["criterion"], f"{r['threshold']:.3f}", f"{r['test_quality']:.2f}",
                                        f"{r['full_test_quality']:.2f}", f"{r['relative_loss_pct']:.2f}",
                                        f"{r['saved_layers_pct']:.1f}", f"{r['layer_speedup']:.2f}",
                                        f"{r['flops_speedup']:.2f}"]) + " |")
    text = (f"Fastest dev setting within {100 * relative_loss:g}% relative dev loss of each model's full depth; "
            "test numbers.\n\n" + "\n".join(lines) + "\n")
    if at_tau is not None:
        text += (f"\nConsistentEE at tau = {tau:g}: test quality {at_tau['test']['quality']:.2f} "
                 f"(full {cee['full']['test_quality']:.2f}), saved layers {100 * at_tau['test']['saved_layers']:.1f}%, "
                 f"layer speed-up {at_tau['test']['layer_speedup']:.2f}x, FLOPs speed-up {at_tau['test']['flops_speedup']:.2f}x.\n")
    if best_baseline is not None:
        text += (f"\nClaim (saves more layers than the best baseline at <= {100 * relative_loss:g}% loss): "
                 f"{'holds' if holds else 'does not hold'} here: ConsistentEE "
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

    ``points[reward]`` = ``[{"alpha", "quality", "layer_speedup"}, ...]``.
    """
    lines = ["| reward | alpha | test quality | layer speed-up |", "|---|---|---|---|"]
    for reward, pts in points.items():
        for p in sorted(pts, key=lambda p: p["alpha"]):
            lines.append(f"| {reward} | {p['alpha']:g} | {p['quality']:.2f} | {p['layer_speedup']:.2f} |")
    text = "\n".join(lines) + "\n"
    tradeoff_plot(points, full_quality, "ConsistentEE reward ablation (test, tau at default)", out_dir / "ablation.png",
                  x="layer_speedup")
    atomic_write_text(out_dir / "ablation.md", text)
    atomic_write_json(out_dir / "ablation.json", points)
    return {"table": text, "plot": str(out_dir / "ablation.png")}


PREDICTOR_NAMES = {"majority": "Majority", "linear_m": "Linear-M", "linear_b": "Linear-B", "bilstm": "BiLSTM", "bert": "BERT"}


def learnability_report(results: dict[str, dict[str, dict]], human: dict | None, out_dir: Path) -> dict:
    """Paper Table 1 shape: per study, micro P/R/F1 of the negative label and accuracy on the
    predictor-test part; a bar chart of F1 per predictor next to Majority; the human study's
    last-epoch accuracies. ``results[study][predictor]`` = ``train_difficulty_predictor`` output."""
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| study | predictor | precision | recall | F1 | accuracy | F1 - Majority F1 |", "|---|---|---|---|---|---|---|"]
    for study, by_predictor in results.items():
        majority_f1 = by_predictor.get("majority", {}).get("test", {}).get("f1")
        for predictor, r in by_predictor.items():
            t = r["test"]
            gain = None if t["f1"] is None or majority_f1 is None else t["f1"] - majority_f1
            lines.append(f"| {study} | {PREDICTOR_NAMES.get(predictor, predictor)} | {fmt(t['precision'])} | "
                         f"{fmt(t['recall'])} | {fmt(t['f1'])} | {fmt(t['accuracy'])} | "
                         f"{'-' if gain is None else f'{gain:+.1f}'} |")
    text = "Micro-averaged precision / recall / F1 of the negative label (an exit that would be wrong), predictor-test part.\n\n"
    text += "\n".join(lines) + "\n"
    for study, by_predictor in results.items():  # oversampling raises the negative label's weight in predictor-train
        r = next((r for r in by_predictor.values() if "negative_share_train" in r), None)
        if r is not None:
            text += (f"\n{study}: negative-label share of predictor-train {100 * r['negative_share_train']:.1f}% as annotated, "
                     f"{100 * r['negative_share_train_oversampled']:.1f}% as trained.")
    text += "\n"
    if human is not None:
        last = human["history"][-1]
        best = max(h["test_accuracy"] for h in human["history"])
        text += (f"\nHuman-defined difficulty (snli_human): after {last['epoch']} epochs train accuracy "
                 f"{last['train_accuracy']:.1f}, test accuracy {last['test_accuracy']:.1f} (best epoch {best:.1f}).\n")
    groups = {study: {PREDICTOR_NAMES.get(p, p): r["test"]["f1"] for p, r in by.items()} for study, by in results.items()}
    plot = grouped_bar_plot(groups, "negative-label F1 (%)", "Learnability of instance difficulty: F1 vs Majority",
                            out_dir / "f1.png", reference="Majority")
    atomic_write_text(out_dir / "results.md", text)
    table = {study: {p: {k: v for k, v in r["test"].items() if k != "layer_accuracy"} for p, r in by.items()}
             for study, by in results.items()}
    atomic_write_json(out_dir / "results.json", {"studies": table, "human": human["history"] if human else None})
    return {"table": text, "plot": str(plot), "json": str(out_dir / "results.json")}
