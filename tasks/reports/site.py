"""The documentation site's results pages (``docs/results/``), rendered from the JSON a run writes.

Every number on a page is a value of a DVC-tracked JSON output (``artifacts/...``) or of a committed
benchmark file (``benchmarks/results/*.json``), formatted and nothing else; the tables reuse the
report modules' own Markdown builders where one exists, so a page and the artifact's ``.md`` agree.
Each section names the files it was rendered from (and the machine, command and settings where
the JSON records them). A section whose files are absent becomes a "not generated yet" line
naming the command that makes them; a page with no section rendered is that line alone.

A page is a list of ``Section``: a title, the files it reads (paths relative to the project root),
the plots it shows, the command that writes the files, and ``render(data) -> Markdown`` over the
loaded JSONs. ``results_pages(layout, root, ...)`` builds them from the artifact layout;
``write_site`` writes pages and plots atomically (same inputs: byte-identical outputs) and removes
plots no page references any more.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tasks.metric_schema import target_label
from tasks.io import RESULT_FILE, TIMING_FILE, atomic_write_bytes, atomic_write_text, with_timing
from tasks.reports.claims import claims_markdown
from tasks.reports.comparison import _row as comparison_row
from tasks.reports.consistentee import consistentee_markdown, consistentee_report
from tasks.reports.default_run import layerwise_markdown, results_markdown
from tasks.reports.generation import distillation_markdown
from tasks.reports.learnability import PREDICTOR_NAMES
from tasks.reports.leco import leco_markdown
from tasks.reports.past_future import comparison_markdown
from tasks.reports.reproduction import figures_digest, reproduction_result
from tasks.reports.tables import escape_cell, markdown_table
from tasks.reports.targets import speedup_markdown
from tasks.reports.verdicts import ONE_SEED, TESTED_BY_COMPARE, direction

IMAGE_DIR = "img"  # plots, beside the pages
BENCHMARKS_DIR = Path("benchmarks") / "results"
METADATA_SKIP = ("rows",)  # benchmark JSON keys that are not metadata
# the relative loss the ConsistentEE report chose its rows at (results.json does not record it)
CONSISTENTEE_RELATIVE_LOSS = inspect.signature(consistentee_report).parameters["relative_loss"].default
# benchmark file stem -> the command that writes it (the scripts' docstrings)
BENCHMARK_COMMANDS = {
    "early_exit_alternating": "python benchmarks/bench_early_exit.py --strategy alternating",
    "hashee": "python benchmarks/bench_hashee.py", "hashee_bart": "python benchmarks/bench_hashee_bart.py",
    "past_future_sst2": "python benchmarks/bench_past_future.py --task sst2",
    "leco_sst2": "python benchmarks/bench_leco.py --task sst2", "generation": "python benchmarks/bench_generation.py",
}


@dataclass(frozen=True)
class Section:
    """One block of a page: ``render`` gets ``{source path: loaded JSON}`` for every path in ``sources``
    (a folder: ``{path inside it: JSON}`` of every ``result.json`` below it); ``images``: plots (or folders
    of ``.png`` plots) copied into ``img/`` and shown; ``command``: what writes the sources."""

    title: str
    sources: tuple[str, ...]
    render: Callable[[dict[str, object]], str]
    command: str
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    """A results page: ``name`` (``default-run`` -> ``default-run.md``), title, intro and sections."""

    name: str
    title: str
    intro: str
    sections: tuple[Section, ...] = field(default_factory=tuple)

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(s for section in self.sections for s in section.sources))


# ---- formatting ----------------------------------------------------------------------------------

def num(value, digits: int = 2, suffix: str = "") -> str:
    """``value`` with ``digits`` decimals (``-`` for None)."""
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def sources_line(paths: list[str]) -> str:
    return "Rendered from " + ", ".join(f"`{p}`" for p in paths) + "."


def metadata_line(meta: dict) -> str:
    """The scalar fields of a benchmark JSON (machine, command, repeats, ...) as one sentence."""
    items = [f"{k}: {num(v) if isinstance(v, float) else v}" for k, v in sorted(meta.items())
             if k not in METADATA_SKIP and not isinstance(v, (dict, list))]
    items += [f"{k}: {', '.join(map(str, v))}" for k, v in sorted(meta.items())
              if k not in METADATA_SKIP and isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v)]
    return "Recorded with the numbers: " + "; ".join(escape_cell(i) for i in items) + "." if items else ""


def image_name(page: str, source: str) -> str:
    """The file name a plot gets in ``img/``: the page name and the source path's folders joined."""
    parts = [p for p in Path(source).parts if p != "artifacts"]
    return f"{page}--" + "-".join(parts)


# ---- benchmarks ----------------------------------------------------------------------------------

BENCHMARK_HEAD = ["method", "batch", "quality", "samples/s", "wall-clock speed-up", "layer speed-up", "FLOPs speed-up"]


def benchmark_markdown(bench: dict, command: str | None = None) -> str:
    """A benchmark file's rows (``benchmarks/*.py`` write them): per method and batch size the quality,
    throughput and speed-ups; with ``timed_layer_speedup`` also that column, and its timing metadata.
    Headed by the command the file records (``command``: what writes it, for files that record none)."""
    measured = bench.get("command") or command
    rows = bench["rows"]
    timed = any("timed_layer_speedup" in r for r in rows)
    generation = "max_new_tokens" in bench  # bench_generation: tokens/s, quality = ROUGE-L vs full depth
    head = ([h.replace("samples/s", "tokens/s").replace("quality", "ROUGE-L") for h in BENCHMARK_HEAD] if generation
            else list(BENCHMARK_HEAD)) + (["layer speed-up (timed rows)"] if timed else [])
    cells = [[escape_cell(r["method"]), str(r["batch_size"]), num(r.get("quality"), 3 if generation else 2), num(r["throughput"], 1),
              num(r["wallclock_speedup"]), num(r.get("layer_speedup")), num(r.get("flops_speedup"))]
             + ([num(r.get("timed_layer_speedup"))] if timed else []) for r in rows]
    meta = metadata_line({k: v for k, v in bench.items() if k != "command"})
    return ((f"Measured by `{measured}`.\n\n" if measured else "") + markdown_table(head, cells) + "\n"
            + (f"\n{meta}\n" if meta else ""))


def benchmark_section(title: str, path: str) -> Section:
    stem = Path(path).stem
    command = f"{BENCHMARK_COMMANDS.get(stem, f'python benchmarks/bench_{stem}.py')} --out {path}"
    return Section(title, (path,), lambda d: benchmark_markdown(d[path], command), command)


def hashee_study_markdown(study: dict) -> str:
    """``hashee_study.json`` (``tasks.reports.hashee.hashee_row`` rows)."""
    walls = sorted({k for r in study["rows"] for k in r if k.startswith("wallclock_speedup_bs")})
    head = ["hash", "test quality", "full model", "FLOPs speed-up", "FLOPs speed-up vs 12L"]
    head += [w.replace("wallclock_speedup_", "wall-clock ") for w in walls]
    cells = [[r["hash"], num(r["quality"]), num(r["full_quality"]), num(r["flops_speedup"]),
              num(r["flops_speedup_vs_12_layers"])] + [num(r.get(w)) for w in walls] for r in study["rows"]]
    return markdown_table(head, cells) + "\n"


# ---- the artifact pages --------------------------------------------------------------------------

def default_run_markdown(results: dict, timing: dict | None, evaluations: dict[str, dict]) -> str:
    """``report/results.json`` with ``report/timing.json``'s wall-clock columns, the relative
    layer-wise table, and each strategy's layer-wise dev/test scores (``evaluate/<s>/metrics.json``)."""
    rows = results["rows"]
    walls = {(w["strategy"], w["criterion"]): w for w in (timing or {}).get("rows", [])}
    batch_sizes = sorted({int(k.removeprefix("wallclock_bs")) for w in walls.values() for k in w if k.startswith("wallclock_bs")})
    merged = [{**r, **{k: v for k, v in walls.get((r["strategy"], r["criterion"]), {}).items() if k.startswith("wallclock")}}
              for r in rows]
    for r in merged:
        for b in batch_sizes:
            r.setdefault(f"wallclock_bs{b}", None)
    text = f"Task: {results['task']}.\n\n" + results_markdown(merged, batch_sizes)
    full = next((r for r in rows if r["strategy"] == "single (full model)"), None)
    if results.get("relative_layerwise") and full is not None:
        text += layerwise_markdown(results["relative_layerwise"], full["test_quality"])
    if evaluations:
        layers = len(next(iter(evaluations.values()))["layerwise"]["test"])
        cells = [[f"{strategy} ({split})"] + [num(v, 1) for v in m["layerwise"][split]]
                 for strategy, m in evaluations.items() for split in ("dev", "test")]
        text += ("\nLayer-wise scores (every row forced to exit at layer k):\n\n"
                 + markdown_table(["strategy"] + [f"layer {k}" for k in range(1, layers + 1)], cells) + "\n")
    return text


def hashee_markdown(metrics: dict) -> str:
    """HashEE's default evaluation (``hashee/default/evaluate/metrics.json`` + ``timing.json``)."""
    walls = sorted((k for k in metrics if k.startswith("wallclock_speedup_bs")), key=lambda k: int(k.removeprefix("wallclock_speedup_bs")))
    head = ["hash", "buckets", "test quality", "full model (test)", "mean token exit layer", "layer speed-up",
            "FLOPs speed-up", "FLOPs speed-up vs 12L", "layer speed-up (timed rows)"]
    head += [w.replace("wallclock_speedup_", "wall-clock ") for w in walls]
    row = [metrics["kind"], str(metrics["buckets"]), num(metrics["test_quality"]), num(metrics["full_test_quality"]),
           num(metrics["avg_token_exit_layer"]), num(metrics["layer_speedup"]), num(metrics["flops_speedup"]),
           num(metrics["flops_speedup_vs_12_layers"]), num(metrics.get("timed_layer_speedup"))]
    return markdown_table(head, [row + [num(metrics[w]) for w in walls]]) + "\n"


def consistentee_page_markdown(report: dict, spearman: dict | None) -> str:
    """``consistentee/default/report/results.json`` (rows, the policy at tau, the claim) and the
    hardness analysis (``hardness/spearman.json``)."""
    text = consistentee_markdown(report["rows"], CONSISTENTEE_RELATIVE_LOSS)
    at_tau = report.get("at_tau")
    if at_tau is not None:
        t = at_tau["test"]
        text += (f"\nConsistentEE policy at its default tau (threshold {num(at_tau['threshold'], 3)}): test quality "
                 f"{num(t['quality'])}, saved layers {num(100 * t['saved_layers'], 1)}%, layer speed-up "
                 f"{num(t['layer_speedup'])}x, FLOPs speed-up {num(t['flops_speedup'])}x.\n")
    best = report.get("best_baseline")
    if best is not None:
        text += (f"\nPaper's claim (the policy saves more layers than the best baseline): **{direction(report['claim_holds'])}** "
                 f"({ONE_SEED}; {TESTED_BY_COMPARE}); best baseline {best['model']}/{best['criterion']} saves {num(best['saved_layers_pct'], 1)}%.\n")
    if spearman is not None:
        text += ("\nHardness analysis (paper Table 1):\n\n"
                 + markdown_table(["Spearman correlation with the memorized layer", "loss", "forgetting events"],
                                  [[f"this run ({spearman['rows']} training rows, {spearman['evaluations']} evaluations)",
                                    num(spearman["spearman_loss"], 3), num(spearman["spearman_forgetting"], 3)]]) + "\n")
    return text


def rounds_markdown(results: dict[str, dict]) -> str:
    """ConsistentEE's rounds from ``rounds/round-<r>/{train,memorized}/result.json``: the policy at tau
    on dev after each round (before round 1: the init policy) and the memorized-layer histogram of
    the round's input model."""
    rounds = sorted({int(k.split("/")[0].removeprefix("round-")) for k in results if k.startswith("round-")})
    rows = []
    for r in rounds:
        train, memorized = results.get(f"round-{r}/train/{RESULT_FILE}"), results.get(f"round-{r}/memorized/{RESULT_FILE}")
        if train is None:
            continue
        if r == rounds[0]:
            before = train["dev_before"]
            rows.append([f"before round {r} (its input policy)", num(before["quality"]), num(before["layer_speedup"], suffix="x"),
                         num(before["objective"], 3), ""])
        rows.append([str(r), num(train["dev"]["quality"]), num(train["dev"]["layer_speedup"], suffix="x"),
                     num(train["dev"]["objective"], 3), " / ".join(map(str, memorized["histogram"])) if memorized else ""])
    return markdown_table(["round", "dev quality at tau", "dev layer speed-up", "dev reward (objective)",
                           "memorized layer histogram of the round's input (M = 1..L, training rows)"], rows) + "\n"


def past_future_page_markdown(comparison: dict) -> str:
    """``past_future/report/comparison.json`` through the report's own Markdown builder."""
    return comparison_markdown(comparison["rows"], comparison["speedups"], comparison["claim"], comparison["full_test_quality"])


def leco_page_markdown(comparison: dict, architecture: dict, weights: dict) -> str:
    """``leco/report/comparison.json`` through the report's own Markdown builder, after the derived
    exits of ``leco/derive/architecture.json`` with each op's final search weight
    (``leco/search/architecture_weights.json``), as the derive step's own table shows them."""
    from tasks.leco import (
        architecture_table,  # the derive step's table (imports torch: only when a LECO page renders)
    )

    text = ("The derived exits, one per layer (each op's weight after the last search epoch in brackets):\n\n"
            + architecture_table(architecture["layers"], weights["epochs"][-1]) + "\n")
    seed = comparison["seeds"][0] if comparison.get("seeds") else "?"
    return text + leco_markdown(comparison["training"], comparison["training_claim"],
                                speedup_markdown(comparison["exiting_rows"], comparison["speedups"]),
                                comparison["exiting_claim"], seed)


AXES = {"layer_speedup": "layer speed-up", "flops_speedup": "FLOPs speed-up"}


def generation_markdown(summary: dict) -> str:
    """``generate/seed-<seed>/report/summary.json``: the operating points over the dev bar and the
    read-off of each criterion's front at the target speed-ups, both axes."""
    ops = summary["operating_points"]
    text = ("Fastest setting whose dev ROUGE-L clears the bar, with its test numbers:\n\n"
            + markdown_table(["criterion", "threshold", "test ROUGE-L", "avg exit layer", "layer speed-up", "FLOPs speed-up"],
                             [[name, f"{op['threshold']:g}", num(op["rouge_l"], 3), num(op["avg_exit_layer"], 1),
                               num(op["layer_speedup"]), num(op["flops_speedup"])] for name, op in ops.items()]) + "\n")
    for key in ("claim", "claim_flops"):
        claim = summary.get(key)
        if claim is None:
            continue
        names = [k for k in claim["rows"][0] if k not in ("speedup", "calm_best")] if claim["rows"] else []
        cells = [[target_label(row['speedup'])] + ["n/a" if row[n] is None else num(row[n], 3) for n in names] for row in claim["rows"]]
        axis = AXES.get(claim["axis"], claim["axis"])
        text += (f"\nTest ROUGE-L read on each front at each {axis} (n/a: beyond its reach); paper's claim (policy above "
                 f"CALM past 2x): **{direction(claim['holds'])}** ({ONE_SEED}).\n\n" + markdown_table([axis] + names, cells) + "\n")
    return text + distillation_markdown(summary)  # per-layer agreement, the adaptation's cost (issue 22)


def benchmark_reports_markdown(bench: dict) -> str:
    """``benchmarks/results/generation.json``'s ``reports``: per timed decoder (the original, and the
    adapted one with ``--adapted``) its exits' held-out agreement and what the adaptation cost."""
    reports = bench.get("reports") or {}
    if not reports:
        return "The benchmark file predates per-decoder reports; re-run the benchmark to fill this section.\n"
    return "".join(f"\n**{label} decoder**\n" + distillation_markdown(r) for label, r in reports.items())


def exit_accuracy_markdown(history: dict) -> str:
    """``generate/seed-<seed>/exits/history.json``: each exit point's next-token accuracy against the
    full-depth greedy token (``models.generation_training.point_report``), before and after the
    exits' init training, on the fitted and the held-out tokens."""
    counts = {"fit": history.get("tokens"), "held_out": history.get("policy_tokens")}
    rows = []
    for stage in ("before", "after"):
        for tokens in ("fit", "held_out"):
            report = history.get(f"init_{stage}_{tokens}")
            if report is not None:
                label = f"{tokens.replace('_', '-')} ({counts[tokens]} tokens)" if counts[tokens] is not None else tokens
                rows.append([f"{stage} init", label] + [num(a, 3) for a in report["point_accuracy"]])
    return ("Next-token accuracy against the full-depth greedy token, per exit point (layer):\n\n"
            + markdown_table(["exit heads", "tokens"] + [str(p) for p in history["points"]], rows) + "\n")


def learnability_page_markdown(results: dict) -> str:
    """``learnability/report/results.json`` through the report's own Markdown builder."""
    rows = [[study, PREDICTOR_NAMES.get(p, p), num(t["precision"], 1), num(t["recall"], 1), num(t["f1"], 1), num(t["accuracy"], 1)]
            for study, by in results["studies"].items() for p, t in by.items()]
    text = ("Micro-averaged precision / recall / F1 of the negative label (an exit that would be wrong), predictor-test "
            "part:\n\n" + markdown_table(["study", "predictor", "precision", "recall", "F1", "accuracy"], rows) + "\n")
    if results.get("human"):
        cells = [[str(h["epoch"]), num(h["train_accuracy"], 1), num(h["test_accuracy"], 1)] for h in results["human"]]
        text += ("\nHuman-defined difficulty (`snli_human`), per epoch:\n\n"
                 + markdown_table(["epoch", "train accuracy", "test accuracy"], cells) + "\n")
    return text


def comparison_markdown_page(compare: dict) -> str:
    """``artifacts/compare/<profile>/report/compare.json``: how the numbers were chosen and the run's
    notes, then per task the method table (the report's own row builder; a flagged cell's status says
    why it is never ranked), an "incomplete" line while cells are pending, the claim tables with their
    paired bootstrap intervals and verdicts (the report's own ``claims_markdown``) and the task's plots."""
    speedups = compare["speedups"]
    lo, hi = compare["auc_range"]
    head = (["method", "status", "lr (chosen)", "full test"] + [f"test @ {target_label(t)}" for t in speedups]
            + [f"AUC[{lo:g},{hi:g}]", "reach", "timed b32 wall-clock @ test quality (criterion)"])
    text = "\n\n".join([compare["selection"], *([compare["intervals"]] if compare.get("intervals") else [])]) + "\n"
    if compare.get("notes"):
        text += "\nNotes on this run:\n\n" + "".join(f"- {escape_cell(n)}\n" for n in compare["notes"])
    for task, t in compare["tasks"].items():
        metric = next((m["metric"] for m in t["methods"].values() if m.get("metric")), "quality")
        text += (f"\n### {task} ({metric})\n\n"
                 + markdown_table(head, [comparison_row(m, s) for m, s in t["methods"].items()]) + "\n")
        pending = sum(s["status"].get("pending", 0) for s in t["methods"].values())
        if pending:
            cells = sum(len(s["seeds"]) for s in t["methods"].values())
            text += f"\n**Incomplete: {pending} of {cells} cells pending** (not run yet; the same command continues the grid).\n"
        if t.get("full_model") is not None:
            text += f"\nFull model (static-L, test): {num(t['full_model'], 1)}\n"
        claims = {"against_static": t.get("against_static", {}), "named": t.get("claims", {}),
                  "layerwise": t.get("layerwise_claims", {})}
        if any(claims.values()):
            text += "\n" + claims_markdown(claims, tuple(speedups)) + "\n"
        text += (f"\n![{task}: quality vs speed-up](IMAGE:pareto-{task}.png)\n"
                 f"\n![{task}: measured vs layer speed-up](IMAGE:wallclock-{task}.png)\n")
    return text


def comparison_cost_markdown(timing: dict) -> str:
    """``artifacts/compare/<profile>/timing.json``: the machine, and the grid's cost per unit from the
    ledger kept across budgeted runs (``flows.compare_grid.cost_summary``), per method."""
    cost = timing.get("cost")
    if not cost:
        return "This `timing.json` predates the cost ledger: run the same command again to write it.\n"
    cells = [[escape_cell(m), str(c["units"]), str(c["units_measured"]), num(c["median_minutes"], 1),
              num(c["minutes_measured"], 1)] for m, c in cost["by_method"].items()]
    cells.append(["all", str(cost["units"]), str(cost["units_measured"]), "", num(cost["minutes_measured"], 1)])
    machines = cost.get("machines")  # per ledger entry: the units of one grid may be measured on several machines
    where = ("; ".join(f"{escape_cell(m)} ({n} unit{'' if n == 1 else 's'})" for m, n in machines.items()) if machines
             else escape_cell(timing.get('machine') or 'an unrecorded machine'))
    return (f"Measured on {where}; runner: {escape_cell(timing['runner'])}. "
            f"{cost['units_measured']} of {cost['units']} units have a measured cost, "
            f"{num(cost['minutes_measured'], 0)} min in all. A unit is one (task, method, seed, learning rate): a "
            "method's first seed trains at every rate of the grid, the other seeds at the chosen one; a training two "
            "methods share is paid by the first unit that needs it; a unit served from the cache records no cost, so "
            "units computed before the ledger existed stay unmeasured.\n\n"
            + markdown_table(["method", "units", "measured", "median min / unit", "total min"], cells) + "\n")


# ---- the pages -----------------------------------------------------------------------------------

def reproduced_markdown(verdicts: dict[str, dict], compare: dict) -> str:
    """``artifacts/compare/<profile>/reproduced/<unit>/result.json`` (``exitflow reproduce-cell``): each
    cell re-run from nothing and compared, figure by figure and row by row, with the report; a verdict
    whose cell has changed in ``compare`` (the report, ``compare.json``) since is marked stale."""
    def against_report(v: dict) -> str:
        cells = compare["tasks"].get(v["task"], {}).get("methods", {}).get(v["method"], {}).get("cells", [])
        cell = next((c for c in cells if c["seed"] == v["seed"] and c["status"] == "ok"), None)
        return "current" if cell is not None and figures_digest(cell) == v["figures_digest"] else "stale: re-run it"

    if not verdicts:
        return "No cell has been re-run yet.\n"
    cells = [[f"`{v['unit'].replace('--', ' / ')}`", escape_cell(v["machine"]), str(v["torch_threads"]),
              str(v["figures_compared"]), str(v["row_arrays_compared"]),
              escape_cell(reproduction_result(v)) if v["same_figures"] else f"**{escape_cell(reproduction_result(v))}**",
              against_report(v),
              num(v["seconds"], 0)] for _, v in sorted(verdicts.items())]
    text = ("Each cell here was re-run from nothing (a fresh folder, nothing from the cache) at the learning rate the "
            "report records, and every quality figure (full depth, each swept threshold's dev and test side, each timed "
            "point without its wall-clock, the chance flag) and every per-row test prediction compared exactly with the "
            "report's; thresholds, which are scores of the model, may differ in their last float32 bits (1e-5 relative: the "
            "order of float reductions changes with the torch thread count and the CPU kind), and every decision they make "
            "is in the per-row predictions, which are compared where the grid's cells tree is on the machine. *Stale*: the "
            "report's cell has changed since the re-run.\n\n"
            + markdown_table(["unit", "machine", "torch threads", "figures", "row arrays", "result", "against this report",
                              "re-run s"], cells) + "\n")
    for _, v in sorted(verdicts.items()):
        if v["differences"]:
            text += f"\nDifferences of `{v['unit']}`:\n\n" + "".join(f"- {escape_cell(d)}\n" for d in v["differences"][:20])
    return text


def _rel(path: Path, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def results_pages(layout, root: Path, past_future_tasks: list[str], leco_tasks: list[str], strategies: list[str],
                  compare_profiles: tuple[str, ...] = ("standard", "quick")) -> list[Page]:
    """Every results page with its sections, from the artifact ``layout`` (``flows.layout.Layout``)
    of the project at ``root``; ``*_tasks`` and ``strategies`` come from ``params.yaml``."""
    r = lambda p: _rel(p, root)  # noqa: E731
    bench = lambda name: (BENCHMARKS_DIR / f"{name}.json").as_posix()  # noqa: E731
    report, evaluations = layout.report, {s: r(layout.evaluate(s) / "metrics.json") for s in strategies}
    results, timing = r(report / "results.json"), r(report / TIMING_FILE)
    default_run = Section(
        f"{layout.task}, seed {layout.seed}", (results, timing, *evaluations.values()),
        lambda d: default_run_markdown(d[results], d[timing], {s: d[p] for s, p in evaluations.items()}),
        "exitflow run", (r(report / "tradeoff.png"), r(report / "layerwise.png")))

    hashee_dir = layout.hashee("default").evaluate
    hashee_metrics, hashee_timing = r(hashee_dir / "metrics.json"), r(hashee_dir / TIMING_FILE)
    hashee_sections = (
        Section("In the default run", (hashee_metrics, hashee_timing),
                lambda d: hashee_markdown(with_timing(d[hashee_metrics], d[hashee_timing])), "exitflow hashee"),
        Section("Hash-function study", (bench("hashee_study"),), lambda d: hashee_study_markdown(d[bench("hashee_study")]),
                "exitflow hashee-study, then copy its results.json to benchmarks/results/hashee_study.json"),
        benchmark_section("Benchmark: HashEE vs the full model vs entropy/patience", bench("hashee")),
        benchmark_section("Benchmark: HashEE on a BART-base-shaped encoder", bench("hashee_bart")))

    cee = layout.consistentee("default")
    cee_report, spearman = r(cee.report / "results.json"), r(cee.hardness / "spearman.json")
    rounds = r(cee.rounds)
    cee_sections = (Section("Rounds", (rounds,), lambda d: rounds_markdown(d[rounds]), "exitflow consistentee"),
                    Section("Against the strategy models' criteria", (cee_report, spearman),
                            lambda d: consistentee_page_markdown(d[cee_report], d[spearman]), "exitflow consistentee",
                            (r(cee.report / "tradeoff.png"),)),)

    def task_layout(task: str):
        return replace(layout, task=task)

    pf_sections = []
    for task in past_future_tasks:
        folder = task_layout(task).past_future_report
        path = r(folder / "comparison.json")
        pf_sections.append(Section(task, (path,), lambda d, p=path: past_future_page_markdown(d[p]),
                                   f"exitflow past-future --task {task}", (r(folder / "curves.png"),)))
    pf_sections.append(benchmark_section("Benchmark: wall-clock on SST-2", bench("past_future_sst2")))

    leco_sections = []
    for task in leco_tasks:
        tl = task_layout(task)
        path, arch = r(tl.leco_report / "comparison.json"), r(tl.leco_derive / "architecture.json")
        weights = r(tl.leco_search / "architecture_weights.json")
        leco_sections.append(Section(task, (path, arch, weights),
                                     lambda d, p=path, a=arch, w=weights: leco_page_markdown(d[p], d[a], d[w]),
                                     f"exitflow leco --task {task}", (r(tl.leco_report / "curves.png"),)))
    leco_sections.append(benchmark_section("Benchmark: wall-clock on SST-2", bench("leco_sst2")))

    gen = layout.generate / "report"
    summary = r(gen / "summary.json")
    exits_history = r(layout.generate / "exits" / "history.json")
    gen_sections = (Section("What the exits can read", (exits_history,), lambda d: exit_accuracy_markdown(d[exits_history]),
                            "exitflow generate"),
                    Section("Quality vs speed-up", (summary,), lambda d: generation_markdown(d[summary]), "exitflow generate",
                            (r(gen / "curves.png"),)),
                    benchmark_section("Benchmark: measured tokens/s", bench("generation")),
                    Section("Each timed decoder's exits and adaptation", (bench("generation"),),
                            lambda d: benchmark_reports_markdown(d[bench("generation")]),
                            "python benchmarks/bench_generation.py --adapted lora --sweep"))

    learn = r(layout.learnability_report / "results.json")
    learn_sections = (Section("Difficulty predictors", (learn,), lambda d: learnability_page_markdown(d[learn]),
                              "exitflow learnability", (r(layout.learnability_report / "f1.png"),)),)

    compare_sections = []
    for profile in compare_profiles:
        compare_dir = layout.compare / profile / "report"
        compare_json, timing_json = r(compare_dir / "compare.json"), r(layout.compare / profile / TIMING_FILE)
        command = f"exitflow compare --profile {profile}"
        compare_sections += [Section(f"Profile {profile}", (compare_json,), lambda d, f=compare_json: comparison_markdown_page(d[f]),
                                     command, (r(compare_dir),)),
                             Section(f"Profile {profile}: cost per unit", (timing_json,),
                                     lambda d, f=timing_json: comparison_cost_markdown(d[f]), command)]
        reproduced = r(layout.compare / profile / "reproduced")
        compare_sections.append(Section(f"Profile {profile}: cells re-run from nothing", (reproduced, compare_json),
                                        lambda d, f=reproduced, c=compare_json: reproduced_markdown(d[f], d[c]),
                                        f"exitflow reproduce-cell <task> <method> --profile {profile}"))

    benchmark_files = sorted(p.name for p in (root / BENCHMARKS_DIR).glob("*.json") if p.name != "hashee_study.json")
    bench_sections = tuple(benchmark_section(Path(name).stem, bench(Path(name).stem)) for name in benchmark_files)

    return [
        Page("default-run", "Default pipeline", "Every strategy's dev-chosen operating point, the full models, HashEE, "
             "ConsistentEE and Past-Future in one table (`exitflow run`, DVC stage `report`).", (default_run,)),
        Page("comparison", "Every method on every task", "`exitflow compare`: each method's dev-chosen front read at "
             "target speed-ups, next to static smaller models.", tuple(compare_sections)),
        Page("hashee", "HashEE", "Token-level exits fixed by a hash table (Sun et al. 2022).", hashee_sections),
        Page("consistentee", "ConsistentEE", "A policy network per layer trained with a hardness-guided reward "
             f"(Zeng et al. 2024), compared at <= {100 * CONSISTENTEE_RELATIVE_LOSS:g}% relative loss.", cee_sections),
        Page("past-future", "Global Past-Future", "Every past strategy with and without the imitated future, against "
             "local exits, read at target layer speed-ups (Liao et al. 2021).", tuple(pf_sections)),
        Page("leco", "LECO", "Searched exit architectures and the COBEE criterion (Zhang et al. 2023).", tuple(leco_sections)),
        Page("generation", "Early exit in generation", "ConsistentEE's policy against CALM on a decoder LLM.", gen_sections),
        Page("learnability", "Learnability of instance difficulty", "Can a predictor tell, from the input alone, "
             "whether an exit will be wrong (HashEE paper, section 2)?", learn_sections),
        Page("benchmarks", "Benchmarks", "Wall-clock measurements, each side by side with the full model in one process "
             "(`benchmarks/*.py`, results committed in `benchmarks/results/`).", bench_sections),
    ]


# ---- rendering -----------------------------------------------------------------------------------

def _images(section: Section, root: Path) -> list[str]:
    """The plot files a section shows: its images (a folder stands for its ``.png`` files, sorted)."""
    found = []
    for image in section.images:
        path = root / image
        found += [_rel(p, root) for p in sorted(path.glob("*.png"))] if path.is_dir() else [image] if path.exists() else []
    return found


def render_section(section: Section, root: Path) -> str:
    """``section.render`` over its loaded files; a file that is not the JSON its command writes is a
    user error naming the file and the command that rewrites it."""
    from models.errors import ExitflowError

    def read(path: Path):
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ExitflowError(f"{_rel(path, root)}: not valid JSON ({err}); re-run `{section.command}` to rewrite it") from None

    data = {}
    for source in section.sources:  # a folder: every step's result.json below it, by path inside the folder
        folder = root / source
        data[source] = ({_rel(p, folder): read(p) for p in sorted(folder.rglob(RESULT_FILE))} if folder.is_dir()
                        else read(folder))
    try:
        return section.render(data)
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        raise ExitflowError(f"{', '.join(section.sources)}: not the JSON `{section.command}` writes (no {err!s} where "
                            "the page expects it); re-run that command, then render again") from None


def link_images(body: str, page: str, shown: list[str]) -> str:
    """``IMAGE:<file name>`` in ``body`` (a renderer placing one of its plots) -> that plot's copy in ``img/``."""
    by_name = {Path(s).name: s for s in shown}

    def link(match: re.Match) -> str:
        name = match.group(1)
        return f"{IMAGE_DIR}/{image_name(page, by_name[name])}" if name in by_name else name

    return re.sub(r"IMAGE:([^)\s]+)", link, body)


def render_page(page: Page, root: Path, render_command: str) -> tuple[str, dict[str, bytes], int]:
    """``(markdown, {image file name: bytes}, rendered)``: ``rendered`` counts the sections whose files were there."""
    parts, images, rendered = [f"# {page.title}\n\n{page.intro}\n"], {}, 0
    for section in page.sections:
        missing = [s for s in section.sources if not (root / s).exists()]
        parts.append(f"\n## {section.title}\n")
        if missing:
            parts.append(f"\nNot generated yet: run `{section.command}`, then `{render_command}` "
                         f"(missing: {', '.join(f'`{m}`' for m in missing)}).\n")
            continue
        rendered += 1
        body = render_section(section, root)
        shown = _images(section, root)
        for s in shown:
            images[image_name(page.name, s)] = (root / s).read_bytes()
        body = link_images(body, page.name, shown)
        inline = set(re.findall(rf"{IMAGE_DIR}/([^)\s]+)", body))
        plots = "".join(f"\n![{Path(s).name}]({IMAGE_DIR}/{image_name(page.name, s)})\n" for s in shown
                        if image_name(page.name, s) not in inline)
        parts.append(f"\n{sources_line(list(section.sources) + shown)}\n\n{body}{plots}")
    if not rendered:
        commands = "; ".join(f"`{c}`" for c in dict.fromkeys(s.command for s in page.sections))
        parts = [f"# {page.title}\n\n{page.intro}\n\nNot generated yet: run {commands}, then `{render_command}`.\n"]
    return "".join(parts), images, rendered


def page_state(rendered: int, sections: int) -> str:
    if rendered == 0:
        return "not generated yet"
    return "rendered" if rendered == sections else f"{rendered} of {sections} sections rendered"


def index_markdown(pages: list[Page], rendered: dict[str, int]) -> str:
    """``index.md``: every results page, whether it has numbers on this checkout, and its files."""
    cells = [[f"[{p.title}]({p.name}.md)", page_state(rendered[p.name], len(p.sections)),
              "<br>".join(f"`{s}`" for s in p.sources)] for p in pages]
    return ("# Results\n\nEvery page here is rendered from the JSON files a run writes (DVC-tracked outputs under "
            "`artifacts/`) and the committed benchmark files (`benchmarks/results/`); no number is typed by hand. "
            "Rebuild them with `exitflow docs` (DVC stage `docs`).\n\n"
            + markdown_table(["page", "state on this checkout", "rendered from"], cells) + "\n")


def write_site(pages: list[Page], root: Path, out_dir: Path, render_command: str) -> list[Path]:
    """Writes ``index.md`` and every page into ``out_dir`` and their plots into ``out_dir/img``
    (each atomically); deletes plots of ``img`` no page shows any more. Returns the pages' paths."""
    out_dir = Path(out_dir)
    written, rendered, all_images = [], {}, {}
    for page in pages:
        text, images, rendered[page.name] = render_page(page, root, render_command)
        all_images.update(images)
        written.append(atomic_write_text(out_dir / f"{page.name}.md", text))
    for name, data in sorted(all_images.items()):
        target = out_dir / IMAGE_DIR / name
        if not target.exists() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
    keep = out_dir / IMAGE_DIR / ".gitkeep"  # img/ is a DVC output even with no plot in it, and git keeps it
    if not keep.exists():
        atomic_write_bytes(keep, b"")
    for stale in sorted((out_dir / IMAGE_DIR).iterdir()):
        if stale.is_file() and stale.name not in all_images and not stale.name.startswith("."):
            stale.unlink()
    written.insert(0, atomic_write_text(out_dir / "index.md", index_markdown(pages, rendered)))
    return written
