"""The report of ``exitflow generate``: test ROUGE-L against the full-depth response read on each
criterion's front, the fastest setting over the dev bar, the claim check (ConsistentEE's policy
above CALM past 2x) and the example responses.

Outputs in ``out_dir``: ``report.md``, ``curves.png``, ``summary.json``, ``examples.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from models.operating import fastest_within
from tasks.io import atomic_write_json, atomic_write_text, write_result
from tasks.plots import curve_plot
from tasks.reports.tables import escape_cell, markdown_table
from models.tradeoff import interpolate_at, pareto_front, target_label
from tasks.reports.verdicts import ONE_SEED, direction

FULL_DEPTH = {"layer_speedup": 1.0, "flops_speedup": 1.0, "rouge_l": 1.0}  # every curve's anchor


def sweep_points(rows: list[dict]) -> list[dict]:
    """Curve rows (one per split and threshold) as the sweep points ``models.operating`` reads:
    ``{"threshold", "dev": row, "test": row}`` with ``quality`` = ROUGE-L."""
    by_threshold: dict[float, dict] = {}
    for r in rows:
        by_threshold.setdefault(r["threshold"], {"threshold": r["threshold"]})[r["split"]] = {**r, "quality": r["rouge_l"]}
    return list(by_threshold.values())


def anchored_front(rows: list[dict], x: str = "layer_speedup") -> list[dict]:
    """The Pareto front of (``x``, ROUGE-L) over the full-depth anchor and ``rows``, sorted by ``x``."""
    return pareto_front([FULL_DEPTH, *rows], x, "rouge_l")


def claim_check(curves: dict[str, list[dict]], speedups: list[float], x: str = "layer_speedup") -> dict:
    """ConsistentEE's policy above CALM (the better of softmax / saturation) on the test
    ROUGE-L vs ``x`` front (anchored at full depth, 1x and ROUGE-L 1), read by interpolation at
    each speed-up (None beyond a curve's reach). Holds when the policy is above CALM at every
    speed-up >= 2 both reach, or when only the policy reaches one; None when neither does."""
    fronts = {name: anchored_front([r for r in rows if r["split"] == "test"], x) for name, rows in curves.items()}
    reach = {name: max(r[x] for r in front) for name, front in fronts.items()}
    table = []
    for s in speedups:
        read = {name: interpolate_at([(r[x], r["rouge_l"]) for r in front], s) for name, front in fronts.items()}
        calm = [v for k, v in read.items() if k in ("softmax", "saturation") and v is not None]
        table.append({"speedup": s, **read, "calm_best": max(calm) if calm else None})
    past2 = [row for row in table if row["speedup"] >= 2 and row.get("policy") is not None]
    both = [row for row in past2 if row["calm_best"] is not None]
    holds = None
    if past2:
        holds = all(row["policy"] > row["calm_best"] for row in both)
    return {"axis": x, "rows": table, "holds": holds, "reach": reach,
            "margins": {row["speedup"]: row["policy"] - row["calm_best"] for row in both}}


def claim_sentence(claim: dict) -> str:
    """One line stating ``claim_check``'s verdict, margins and reach."""
    verdict = direction(claim["holds"], "cannot be read (the policy does not reach 2x)")
    margins = ", ".join(f"{target_label(k)}: {v:+.3f}" for k, v in claim["margins"].items()) or "none where both reach"
    reach = ", ".join(f"{k} {v:.2f}x" for k, v in claim["reach"].items())
    return (f"Paper's claim on {claim['axis'].replace('_', ' ')} (ConsistentEE policy above CALM past 2x, test front): "
            f"**{verdict}** ({ONE_SEED}); margins {margins}; reach {reach}.")


def operating_point(rows: list[dict], rouge_target: float) -> dict | None:
    """A criterion's dev-chosen operating point, the rule of ``models.operating.operating_points``:
    the sweep point (``sweep_points``) of the fastest setting whose dev ROUGE-L is at least
    ``rouge_target``, or, when none reaches it, the one with the best dev ROUGE-L; None without a
    threshold read on both dev and test."""
    points = [p for p in sweep_points(rows) if "dev" in p and "test" in p]
    if not points:
        return None
    return fastest_within(points, rouge_target) or max(points, key=lambda p: p["dev"]["quality"])


def fastest_over_bar(curves: dict[str, list[dict]], rouge_target: float) -> dict[str, dict]:
    """Per criterion, the fastest setting whose dev ROUGE-L is at least ``rouge_target``, with its
    test numbers; criteria with none are left out."""
    best = {}
    for name, rows in curves.items():
        pick = operating_point(rows, rouge_target)
        if pick is not None and pick["dev"]["rouge_l"] >= rouge_target:
            best[name] = {"threshold": pick["threshold"],
                          **{k: pick["test"][k] for k in ("rouge_l", "layer_speedup", "flops_speedup", "avg_exit_layer")}}
    return best


def report_markdown(names: list[str], claims: list[tuple[dict, str]], best: dict[str, dict], rouge_target: float) -> str:
    """``report.md``: the read-off tables, the operating points over the bar and the claims."""
    lines = ["Test ROUGE-L against the full-depth response, read on each criterion's front (n/a: beyond its reach)."]
    for c, label in claims:
        rows = [[target_label(row['speedup'])] + ["n/a" if row[n] is None else f"{row[n]:.3f}" for n in names] for row in c["rows"]]
        lines += ["", markdown_table([label] + names, rows)]
    rows = [[name, f"{b['threshold']:g}", f"{b['rouge_l']:.3f}", f"{b['layer_speedup']:.2f}x", f"{b['flops_speedup']:.2f}x"]
            for name, b in best.items()]
    lines += ["", f"Fastest setting with dev ROUGE-L >= {rouge_target} (reported on test):", "",
              markdown_table(["criterion", "threshold", "test ROUGE-L", "layer speed-up", "FLOPs speed-up"], rows)]
    for c, _ in claims:
        lines += ["", claim_sentence(c)]
    lines += ["", "The policy reads the exits after ConsistentEE's rounds (init + Eq. 6 epochs); static and CALM read "
              "the init exits."]
    return "\n".join(lines) + "\n"


def examples_markdown(examples: list[dict]) -> str:
    """``examples.md``: the first example's responses, full depth vs accelerated."""
    rows = [[escape_cell(r["prompt"], 300), escape_cell(r["full_depth"], 300), escape_cell(r["accelerated"], 300),
             f"{r['rouge_l']:.2f}"] for e in examples[:1] for r in e["responses"]]
    return markdown_table(["prompt", "full depth", "accelerated", "ROUGE-L"], rows) + "\n"


def distillation_markdown(reports: dict) -> str:
    """The per-layer held-out agreement table (exits vs the original full model, before and after
    distillation) and, after an adaptation, what it cost the full-depth model."""
    lines = []
    d = reports.get("distillation")
    if d:
        lines += ["", f"Held-out next-token agreement with the original full model ({d['held_out_tokens']} tokens; "
                      f"exits distilled on {d['train_tokens']} tokens{', adapted backbone' if d['adapted'] else ''}):", "",
                  "| exit layer | before | after | agreement with own last layer |", "|---|---|---|---|"]
        lines += [f"| {p} | {b:.3f} | {a:.3f} | {own:.3f} |" for p, b, a, own in
                  zip(d["points"], d["agreement_before"], d["agreement_after"], d["agreement_last_after"])]
    a = reports.get("adaptation")
    if a:
        lines += ["", f"Adaptation ({a['adapt']}, {a['tokens']} tokens): the full-depth model agrees with the original on "
                      f"{a['full_depth_agreement_with_original']:.3f} of held-out tokens; perplexity on held-out text "
                      f"{a['perplexity_original']:.2f} -> {a['perplexity_adapted']:.2f}; ROUGE-L of its test responses "
                      f"against the original's {a['rouge_l_full_depth_vs_original']:.3f}."]
    return "\n".join(lines) + ("\n" if lines else "")


@task(name="report_generation")
def report_generation(curves_paths: dict[str, Path], examples_path: Path, speedups: list[float], rouge_target: float,
                      out_dir: Path, title: str, distill_reports: dict[str, Path] | None = None) -> dict:
    """Writes the curves plot, the read-off table with the claim check, and the example responses;
    returns their paths with ``table`` and ``claim_holds``. ``distill_reports`` (``{"distillation",
    "adaptation"}`` report files of ``tasks.generation_distill``) add the per-layer agreement and
    the adaptation's cost to the table and ``summary.json``."""
    extra = {name: json.loads(Path(p).read_text()) for name, p in (distill_reports or {}).items()}
    curves = {name: json.loads(Path(p).read_text()) for name, p in curves_paths.items()}
    claim = claim_check(curves, speedups)
    claim_flops = claim_check(curves, speedups, "flops_speedup")
    test = {name: [r for r in rows if r["split"] == "test"] for name, rows in curves.items()}
    plot = curve_plot({name: [(r["layer_speedup"], r["rouge_l"]) for r in anchored_front(rows)] for name, rows in test.items()},
                      "layer speed-up (decode steps)", "ROUGE-L vs full depth", title, Path(out_dir) / "curves.png",
                      reference=rouge_target, others={name: [(r["flops_speedup"], r["rouge_l"]) for r in anchored_front(rows, "flops_speedup")]
                                                      for name, rows in test.items()},
                      others_xlabel="FLOPs speed-up (decode steps)")
    best = fastest_over_bar(curves, rouge_target)
    table = report_markdown(list(curves), [(claim, "layer speed-up"), (claim_flops, "FLOPs speed-up")], best, rouge_target)
    table += distillation_markdown(extra)
    atomic_write_text(Path(out_dir) / "report.md", table)
    examples_md = atomic_write_text(Path(out_dir) / "examples.md",
                                    examples_markdown(json.loads(Path(examples_path).read_text())))
    summary = atomic_write_json(Path(out_dir) / "summary.json", {"claim": claim, "claim_flops": claim_flops,
                                                                 "operating_points": best} | extra)
    return write_result(out_dir, {"report": Path(out_dir) / "report.md", "plot": plot, "examples": examples_md,
                                  "summary": summary, "table": table, "claim_holds": claim["holds"]})
