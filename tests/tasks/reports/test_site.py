"""The results pages (tasks/reports/site.py) rendered from a tiny run's outputs: the report JSONs are
written by the report writers themselves (``build_report``, ``consistentee_report``,
``compare_past_future``, ``compare_leco``, ``report_generation``, ``learnability_report``,
``compare_report``) from evaluation files in the shape ``evaluate_exits`` / ``evaluate_hashee`` write,
with seeded random numbers; the benchmark files are the repository's own. Every number in every
table must be the JSON value it came from."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from flows.compare_grid import cost_summary, grid_timing, unit_name
from flows.layout import Layout
from models.leco import SEARCH_SPACE
from tasks.io import RESULT_FILE, TIMING_FILE, atomic_write_json, write_result
from tasks.leco import derive_exits
from tasks.reports.comparison import compare_report
from tasks.reports.consistentee import consistentee_report
from tasks.reports.default_run import build_report
from tasks.reports.generation import report_generation
from tasks.reports.learnability import PREDICTOR_NAMES, learnability_report
from tasks.reports.leco import compare_leco
from tasks.reports.past_future import compare_past_future
from tasks.reports.reproduction import figures_digest
from tasks.reports.site import BENCHMARK_COMMANDS, results_pages, write_site
from tests.tasks.reports.test_claims import make_cell
from tests.tasks.reports.test_comparison import cell

ROOT = Path(__file__).resolve().parents[3]
L = 3  # layers of the tiny run
STRATEGIES = ["joint", "alternating"]
RENDER = "exitflow docs"


# ---- a tiny run's outputs ------------------------------------------------------------------------

def curve_point(rng: random.Random, threshold: float) -> dict:
    """``models.operating.curve_point``'s keys."""
    avg = rng.uniform(1.0, L)
    return {"threshold": threshold, "quality": rng.uniform(50, 90), "avg_exit_layer": avg, "saved_layers": 1 - avg / L,
            "layer_speedup": L / avg, "flops_speedup": 0.95 * L / avg}


def sweep(rng: random.Random, points: int = 6) -> list[dict]:
    """``models.operating.sweep``: one ``{split: curve point}`` per threshold."""
    return [{split: curve_point(rng, tau) for split in ("dev", "test")} for tau in sorted(rng.uniform(0, 1) for _ in range(points))]


def write_evaluation(rng: random.Random, out: Path, strategy: str, criteria: list[str], fixed: tuple[str, ...] = ()) -> Path:
    """``metrics.json``, ``curves.json`` and ``timing.json`` as ``tasks.evaluate.evaluate_exits`` writes them."""
    curves = {name: sweep(rng) for name in criteria}
    operating = {name: {"threshold": pts[2]["dev"]["threshold"], "dev": pts[2]["dev"], "test": pts[2]["test"]}
                 for name, pts in curves.items()}
    summary = {"task": "sst2", "strategy": strategy, "metric": "accuracy", "num_layers": L,
               "full": {"dev_quality": rng.uniform(70, 90), "test_quality": rng.uniform(70, 90)},
               "operating_points": operating,
               "fixed_points": {n: {"threshold": 0.5, "dev": curve_point(rng, 0.5), "test": curve_point(rng, 0.5)} for n in fixed},
               "layerwise": {s: [rng.uniform(50, 90) for _ in range(L)] for s in ("dev", "test")},
               "real_vs_simulated_mismatches": {n: 0 for n in criteria}, "timing_rows": 8,
               "dev_chance_check": {"at_chance": False, "score": 80.0, "majority_score": 50.0, "loss": 0.4, "chance_loss": 0.69}}
    timing = {"operating_points": {n: {f"wallclock_speedup_bs{b}": rng.uniform(1, 3) for b in (1, 4)} for n in criteria}}
    atomic_write_json(out / "curves.json", curves)
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_json(out / TIMING_FILE, timing)
    return out


def tiny_run(root: Path) -> Layout:
    """Every report a tiny run writes (mrpc's Past-Future and LECO left out: those sections stay
    "not generated yet"), and the repository's benchmark files."""
    rng = random.Random(0)
    layout = Layout(artifacts=root / "artifacts", data=root / "data", task="sst2", seed=42)
    criteria = ["entropy", "patience", "lte"]
    evals = {s: write_evaluation(rng, layout.evaluate(s), s, criteria) for s in STRATEGIES}
    hashee = layout.hashee("default").evaluate
    atomic_write_json(hashee / "metrics.json", {  # tasks.hashee.evaluate_hashee
        "task": "sst2", "kind": "frequency", "buckets": 3, "num_layers": L, "backbone_layers": L,
        "dev_quality": rng.uniform(60, 80), "full_dev_quality": rng.uniform(70, 90), "test_quality": rng.uniform(60, 80),
        "full_test_quality": rng.uniform(70, 90), "flops_speedup": rng.uniform(1, 3), "flops_speedup_vs_12_layers": rng.uniform(3, 6),
        "avg_token_exit_layer": rng.uniform(1, L), "layer_speedup": rng.uniform(1, 3), "timing_rows": 8,
        "timed_layer_speedup": rng.uniform(1, 3)})
    atomic_write_json(hashee / TIMING_FILE, {f"{k}_bs{b}": rng.uniform(1, 300) for b in (1, 4)
                                              for k in ("throughput", "full_throughput", "wallclock_speedup")})
    build_report.fn(evals, [1, 4], layout.report, hashee)

    cee = layout.consistentee("default")
    for r in (1, 2):  # tasks.consistentee: compute_memorized_layer, consistentee_round
        write_result(cee.memorized(r), {"memorized": cee.memorized(r) / "memorized.pt", "histogram": [rng.randint(0, 40) for _ in range(L)],
                                        "plot": cee.memorized(r) / "histogram.png", "mean": rng.uniform(1, L), "rows": 48})
        tradeoff = lambda: {"quality": rng.uniform(50, 90), "avg_exit_layer": rng.uniform(1, L), "layer_speedup": rng.uniform(1, 3),  # noqa: E731
                            "objective": rng.uniform(-1, 0), "layer_scores": [rng.uniform(50, 90) for _ in range(L)]}
        write_result(cee.train(r), {"checkpoint": cee.train(r) / "checkpoint", "round": r, "policy": {"reward": rng.uniform(-1, 0)},
                                    "heads": {"loss": rng.uniform(0, 1)}, "dev_before": tradeoff(), "dev": tradeoff()})
    write_evaluation(rng, cee.evaluate, "consistentee", ["entropy", "patience", "policy"], fixed=("policy",))
    consistentee_report(cee.evaluate, {"joint": evals["joint"]}, cee.report)
    atomic_write_json(cee.hardness / "spearman.json", {  # tasks.consistentee.spearman_table
        "spearman_loss": rng.uniform(0, 1), "spearman_forgetting": rng.uniform(0, 1), "evaluations": 4, "rows": 48,
        "mean_forgetting_events": rng.uniform(0, 1), "share_ever_forgotten": rng.uniform(0, 1)})

    pf = {s: write_evaluation(rng, layout.past_future(s).evaluate, s, ["entropy", "patience"])
          for s in ("concat", "concat-future", "local-joint")}
    compare_past_future.fn(pf, [1.5, 2.0], layout.past_future_report, "sst2", 42)

    leco = {"leco": write_evaluation(rng, layout.leco_model.evaluate, "leco", ["cobee", "entropy", "patience"]),
            "jt-linear": write_evaluation(rng, layout.leco_baseline("jt-linear").evaluate, "jt-linear", ["entropy", "patience"])}
    compare_leco.fn(leco, leco, [1.5, 2.0], layout.leco_report, "sst2", 42)
    epoch = lambda: [{choice: {op: rng.uniform(0, 1) for op in ops} for choice, ops in SEARCH_SPACE.items()}  # noqa: E731
                     for _ in range(L)]
    searched = atomic_write_json(layout.leco_search / "architecture_weights.json",  # tasks.leco.search_exits
                                 {"task": "sst2", "seed": 42, "inner_size": 8, "epochs": [epoch(), epoch()]})
    derive_exits.fn(searched, layout.leco_derive)

    gen = layout.generate
    points = [1, 2, 3]  # tasks.generation.train_exits' history.json (models.generation_training.point_report)
    atomic_write_json(gen / "exits" / "history.json", {
        "points": points, "tokens": 60, "policy_tokens": 20, "init": [], "rounds": [],
        **{f"init_{stage}_{tokens}": {"point_loss": [rng.uniform(0, 5) for _ in points],
                                      "point_accuracy": [rng.uniform(0, 1) for _ in points]}
           for stage in ("before", "after") for tokens in ("fit", "held_out")}})
    curves = {}
    for name in ("static", "softmax", "saturation", "policy"):  # tasks.generation curve rows
        curves[name] = gen / "evaluate" / f"{name}.json"
        rows = [{"split": split, "threshold": tau, "layer_speedup": s, "flops_speedup": 0.9 * s, "avg_exit_layer": 30 / s,
                 "rouge_l": rng.uniform(0.3, 1.0)}
                for tau in (0.3, 0.6, 0.9) for split, s in (("dev", rng.uniform(1, 3)), ("test", rng.uniform(1, 3)))]
        atomic_write_json(curves[name], rows)
    atomic_write_json(gen / "evaluate" / "examples.json", [{"threshold": 0.9, "responses": []}])
    report_generation.fn(curves, gen / "evaluate" / "examples.json", [1.5, 2.0], 0.5, gen / "report", "tiny")

    def predictor() -> dict:  # tasks.learnability.train_difficulty_predictor
        test = {k: rng.uniform(0, 100) for k in ("precision", "recall", "f1", "accuracy")}
        return {"test": {**test, "layer_accuracy": [rng.uniform(0, 100)] * L}, "dev": test,
                "negative_share_train": rng.uniform(0, 1), "negative_share_train_oversampled": rng.uniform(0, 1)}

    learnability_report({study: {p: predictor() for p in ("majority", "bilstm", "bert")} for study in ("snli_model", "sst2")},
                        {"history": [{"epoch": e, "train_accuracy": rng.uniform(50, 99), "test_accuracy": rng.uniform(50, 60)}
                                     for e in (1, 2)]}, layout.learnability_report)

    compare_cells = []  # two seeds with per-row test predictions (claims get intervals), a flagged and a pending cell
    right = rng.randint  # rows right, of test_claims.N
    for seed in (1, 2):
        compare_cells += [
            make_cell(root / "rows", "joint", seed, [(1.0, right(34, 38)), (2.0, right(24, 32)), (3.0, right(10, 20))]),
            make_cell(root / "rows", "alternating", seed, [(1.0, right(34, 38)), (2.0, right(24, 32)), (3.0, right(10, 20))]),
            make_cell(root / "rows", "hashee", seed, [(2.0, right(30, 40))]),
            make_cell(root / "rows", "weak", seed, [(1.0, 20), (2.0, 20)], full_dev=rng.uniform(30, 50)),
            make_cell(root / "rows", "static-6", seed, [(1.0, right(36, 40))]),
            make_cell(root / "rows", "static-3", seed, [(2.0, right(0, 20))])]
    compare_cells.append(cell("leco", 1, status="pending", error="not run yet"))
    compare_report(compare_cells, (1.5, 2.0), out_dir=layout.compare / "quick" / "report", resamples=200,
                   notes=["Learning rate: per (task, method), chosen on seed 1 and reused for the other seeds."])
    units = [(c.method, unit_name(c.task, c.method, c.seed, 0.1)) for c in compare_cells]  # the cost ledger, some measured
    ledger = {name: rng.uniform(60, 900) for _, name in units[::2]}
    atomic_write_json(layout.compare / "quick" / TIMING_FILE,
                      grid_timing(1.0, "sequential", [], [], cost_summary(units, ledger), "a test machine, 2 cores"))

    report = json.loads((layout.compare / "quick" / "report" / "compare.json").read_text())
    for seed, digest_of, differences in ((1, "report", []), (2, "an earlier report", ["full.test: recorded 81.0, re-run 80.5"])):
        recorded = next(c for c in report["tasks"]["sst2"]["methods"]["joint"]["cells"] if c["seed"] == seed)
        unit = unit_name("sst2", "joint", seed, 0.1)  # exitflow reproduce-cell verdicts: one current, one stale
        atomic_write_json(layout.compare / "quick" / "reproduced" / unit / RESULT_FILE, {
            "unit": unit, "task": "sst2", "method": "joint", "seed": seed, "lr": 0.1, "machine": "a test machine, 2 cores",
            "torch_threads": 2, "seconds": rng.uniform(60, 600), "figures_compared": rng.randint(20, 400),
            "row_arrays_compared": rng.randint(3, 30), "identical": False, "same_figures": not differences,
            "differences": differences, "threshold_float_tails": 2, "max_threshold_relative_difference": 1.9e-6,
            "figures_digest": figures_digest(recorded) if digest_of == "report" else "0" * 64})

    shutil.copytree(ROOT / "benchmarks" / "results", root / "benchmarks" / "results")
    return layout


def render(root: Path, layout: Layout, out: Path) -> list:
    pages = results_pages(layout, root, ["sst2", "mrpc"], ["sst2"], STRATEGIES)
    write_site(pages, root, out, RENDER)
    return pages


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    layout = tiny_run(root)
    render(root, layout, root / "docs" / "results")
    return root, layout


# ---- reading the pages back ----------------------------------------------------------------------

def tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of a page as rows of ``{header: cell}``."""
    found, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---") and (i == 0 or not lines[i - 1].startswith("|")):
            head = split_row(line)
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = split_row(row)
                assert len(cells) == len(head), f"a row with {len(cells)} cells under {len(head)} headers: {row}"
                rows.append(dict(zip(head, cells)))
            found.append(rows)
    return found


def split_row(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def page(root: Path, name: str) -> str:
    return (root / "docs" / "results" / f"{name}.md").read_text()


def load(root: Path, path: Path) -> dict:
    return json.loads(Path(path).read_text())


def shown(value: float, text: str) -> bool:
    """``text`` is ``value`` with as many decimals as ``text`` has (a trailing 'x' or '%' ignored)."""
    number = text.rstrip("x%").strip()
    mantissa, e, _ = number.partition("e")
    digits = len(mantissa.partition(".")[2])
    return f"{value:.{digits}{'e' if e else 'f'}}" == number


def shown_mean_std(aggregate: dict, text: str) -> bool:
    """``text`` is ``format_mean_std`` of ``{"mean", "std"}``: the mean, then "± std" with two seeds or more."""
    mean, _, std = text.partition(" ± ")
    std = std.split(" (")[0]
    return shown(aggregate["mean"], mean) and (not std or shown(aggregate["std"], std))


def row_where(rows: list[dict], **match) -> dict:
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, (match, rows)
    return hits[0]


def read_source(path: Path):
    """A page's source: a JSON file, or a folder's ``result.json`` files."""
    return [load(path, p) for p in sorted(path.rglob(RESULT_FILE))] if path.is_dir() else load(path, path)


NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]\d+)?")


def json_numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in json_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in json_numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


# ---- the tests -----------------------------------------------------------------------------------

def test_every_decimal_in_a_table_is_a_value_of_the_files_the_page_names(site):
    """No number is computed or typed on a page: each decimal in a table cell is one of the page's
    source JSON values (percentages of fractions included), formatted. The ``method`` and ``unit``
    columns are labels (``saturation@0.95`` names its threshold, ``lr-0.0001`` a rate), not values."""
    root, _ = site
    for md in sorted((root / "docs" / "results").glob("*.md")):
        text = md.read_text()
        sources = re.findall(r"`([^`]+)`", "\n".join(l for l in text.splitlines() if l.startswith("Rendered from")))
        pool = [n for s in sources if not s.endswith(".png") for n in json_numbers(read_source(root / s))]
        pool += [100 * n for n in pool]
        for table in tables(text):
            for row in table:
                for header, cell_text in row.items():
                    for number in ([] if header in ("method", "unit") else NUMBER.findall(cell_text)):
                        assert any(shown(v, number) for v in pool), f"{md.name}: {header} = {cell_text!r} is in no source"


def test_default_run_page_holds_the_report_rows_and_layerwise_scores(site):
    root, layout = site
    text = page(root, "default-run")
    results, timing = load(root, layout.report / "results.json"), load(root, layout.report / TIMING_FILE)
    main, relative, layerwise = tables(text)
    assert len(main) == len(results["rows"])
    for r, w in zip(results["rows"], timing["rows"]):
        row = row_where(main, strategy=r["strategy"], criterion=r["criterion"])
        assert shown(r["test_quality"], row["test quality"]) and shown(r["avg_exit_layer"], row["avg exit layer"])
        assert shown(r["layer_speedup"], row["layer speed-up"]) and shown(r["flops_speedup"], row["FLOPs speed-up"])
        assert shown(w["wallclock_bs4"], row["wall-clock speed-up bs=4"])
    for strategy in STRATEGIES:
        rel = row_where(relative, strategy=strategy)
        assert all(shown(v, rel[f"layer {k}"]) for k, v in enumerate(results["relative_layerwise"][strategy], 1))
        metrics = load(root, layout.evaluate(strategy) / "metrics.json")
        for split in ("dev", "test"):
            row = row_where(layerwise, strategy=f"{strategy} ({split})")
            assert all(shown(v, row[f"layer {k}"]) for k, v in enumerate(metrics["layerwise"][split], 1))
    assert (root / "docs/results/img/default-run--sst2-seed-42-report-tradeoff.png").read_bytes() == \
        (layout.report / "tradeoff.png").read_bytes()
    assert "](img/default-run--sst2-seed-42-report-tradeoff.png)" in text


def test_method_pages_hold_their_report_values(site):
    root, layout = site
    hashee = {**load(root, layout.hashee("default").evaluate / "metrics.json"),
              **load(root, layout.hashee("default").evaluate / TIMING_FILE)}
    row = tables(page(root, "hashee"))[0][0]
    assert shown(hashee["test_quality"], row["test quality"]) and shown(hashee["flops_speedup"], row["FLOPs speed-up"])
    assert shown(hashee["wallclock_speedup_bs4"], row["wall-clock bs4"])

    cee = load(root, layout.consistentee("default").report / "results.json")
    rounds, cee_rows, spearman_rows = tables(page(root, "consistentee"))
    first = load(root, layout.consistentee("default").train(1) / RESULT_FILE)
    assert shown(first["dev_before"]["quality"], rounds[0]["dev quality at tau"])
    for r in (1, 2):
        train = load(root, layout.consistentee("default").train(r) / RESULT_FILE)
        memorized = load(root, layout.consistentee("default").memorized(r) / RESULT_FILE)
        row = row_where(rounds, round=str(r))
        assert shown(train["dev"]["quality"], row["dev quality at tau"]) and shown(train["dev"]["objective"], row["dev reward (objective)"])
        assert row["memorized layer histogram of the round's input (M = 1..L, training rows)"] == " / ".join(map(str, memorized["histogram"]))
    for r in cee["rows"]:
        row = row_where(cee_rows, model=r["model"], criterion=r["criterion"])
        assert shown(r["saved_layers_pct"], row["saved layers %"]) and shown(r["test_quality"], row["test quality"])
    spearman = load(root, layout.consistentee("default").hardness / "spearman.json")
    assert shown(spearman["spearman_loss"], spearman_rows[0]["loss"])

    pf = load(root, layout.past_future_report / "comparison.json")
    pf_text = page(root, "past-future")
    for r in pf["rows"]:
        cells = row_where(tables(pf_text)[0], method=r["method"])
        for target, a in r["at"].items():
            q, s, f = NUMBER.findall(cells[f"{target}: test quality (layer / FLOPs speed-up)"])
            assert shown(a["test_quality"], q) and shown(a["test_layer_speedup"], s) and shown(a["test_flops_speedup"], f)
    assert "Not generated yet: run `exitflow past-future --task mrpc`, then `exitflow docs`" in pf_text

    leco = load(root, layout.leco_report / "comparison.json")
    architecture, training, exiting = tables(page(root, "leco"))[:3]
    derived = load(root, layout.leco_derive / "architecture.json")["layers"]
    last = load(root, layout.leco_search / "architecture_weights.json")["epochs"][-1]
    for k, (row, layer) in enumerate(zip(architecture, derived)):
        op, weight = row["pooler"].split()
        assert op == layer["pooling"] and shown(last[k]["pooling"][op], weight.strip("()"))
    for r in leco["training"]:
        row = row_where(training, method=r["method"])
        assert shown(r["test_avg"], row["test AVG"]) and shown(r["dev_avg"], row["dev AVG"])
    for r in leco["exiting_rows"]:
        cells = row_where(exiting, method=r["method"])
        for target, a in r["at"].items():
            q, _, _ = NUMBER.findall(cells[f"{target}: test quality (layer / FLOPs speed-up)"])
            assert shown(a["test_quality"], q)

    history = load(root, layout.generate / "exits" / "history.json")
    accuracy, ops = tables(page(root, "generation"))[:2]
    row = row_where(accuracy, **{"exit heads": "after init", "tokens": "held-out (20 tokens)"})
    assert all(shown(a, row[str(p)]) for p, a in zip(history["points"], history["init_after_held_out"]["point_accuracy"]))
    summary = load(root, layout.generate / "report" / "summary.json")
    for name, op in summary["operating_points"].items():
        row = row_where(ops, criterion=name)
        assert shown(op["rouge_l"], row["test ROUGE-L"]) and shown(op["layer_speedup"], row["layer speed-up"])

    learn = load(root, layout.learnability_report / "results.json")
    predictors = tables(page(root, "learnability"))[0]
    for study, by in learn["studies"].items():
        for p, t in by.items():
            row = row_where(predictors, study=study, predictor=PREDICTOR_NAMES[p])
            assert all(shown(t[k], row[h]) for k, h in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")))

    compare = load(root, layout.compare / "quick" / "report" / "compare.json")
    methods = tables(page(root, "comparison"))[0]
    for method, s in compare["tasks"]["sst2"]["methods"].items():
        row = row_where(methods, method=method)
        if not s["status"]["ok"]:
            assert row["full test"] == "—" and "pending" in row["status"]
            continue
        assert shown_mean_std(s["full_test"], row["full test"]) and shown_mean_std(s["auc"], row["AUC[1,3]"])
        reached = s["quality_at"]["2x"]
        assert row["test @ 2x"] == "not reached" if reached["mean"] is None else shown_mean_std(reached, row["test @ 2x"])


def test_comparison_page_holds_the_claims_flags_notes_and_pending_cells(site):
    """The comparison page shows each claim's interval and verdict as compare.json has them, the
    flagged method's reason (never ranked), the run's notes, the pending count and every task plot."""
    root, layout = site
    report = layout.compare / "quick" / "report"
    compare, text = load(root, report / "compare.json"), page(root, "comparison")
    sst2 = compare["tasks"]["sst2"]
    claim_tables = {"method" if "method" in t[0] else "claim": t for t in tables(text) if t and "@ 2x" in t[0]}
    assert set(claim_tables) == {"method", "claim"}, "no claim tables on the comparison page"
    against_static = row_where(claim_tables["method"], method="joint")
    claim = sst2["against_static"]["joint"]["2x"]
    cell_text = against_static["@ 2x"]
    difference, low, high = NUMBER.findall(cell_text)[:3]
    assert (shown(claim["difference"], difference) and shown(claim["low"], low) and shown(claim["high"], high)), cell_text
    assert cell_text.endswith(f"{claim['verdict']} ({claim['seeds']} seeds)") and claim["seeds"] == 2
    named = row_where(claim_tables["claim"], **{"claim (A vs B)": "HashEE vs static"})
    hashee = sst2["claims"]["HashEE vs static"]["2x"]
    assert named["@ 2x"].endswith(f"{hashee['verdict']} ({hashee['seeds']} seeds)")
    weak = row_where(tables(text)[0], method="weak")
    assert sst2["methods"]["weak"]["flagged"] and "FLAGGED, not ranked: full-depth dev" in weak["status"]
    assert "Learning rate: per (task, method), chosen on seed 1" in text
    pending = sum(s["status"]["pending"] for s in sst2["methods"].values())
    assert pending == 1 and f"Incomplete: {pending} of " in text
    for plot in ("pareto-sst2.png", "wallclock-sst2.png"):
        assert f"(img/comparison--compare-quick-report-{plot})" in text and (root / "docs/results/img" / f"comparison--compare-quick-report-{plot}").exists()


def test_comparison_page_holds_each_profiles_cost_per_unit(site):
    """The cost section shows timing.json's ledger summary per method; a profile not run names its command."""
    root, layout = site
    timing, text = load(root, layout.compare / "quick" / TIMING_FILE), page(root, "comparison")
    cost = timing["cost"]
    table = next(t for t in tables(text) if t and "median min / unit" in t[0])
    assert [r["method"] for r in table] == [*cost["by_method"], "all"]
    for row in table[:-1]:
        c = cost["by_method"][row["method"]]
        assert row["units"] == str(c["units"]) and row["measured"] == str(c["units_measured"])
        assert shown(c["minutes_measured"], row["total min"])
        assert (row["median min / unit"] == "-") if c["median_minutes"] is None else shown(c["median_minutes"], row["median min / unit"])
    assert table[-1]["units"] == str(cost["units"]) and shown(cost["minutes_measured"], table[-1]["total min"])
    assert f"{cost['units_measured']} of {cost['units']} units have a measured cost" in text and timing["machine"] in text
    assert "## Profile standard\n\nNot generated yet: run `exitflow compare --profile standard`" in text


def test_comparison_page_lists_each_reproduced_cell_and_marks_a_stale_one(site):
    """Each reproduce-cell verdict is a row with its counts and result; one whose cell has changed in
    the report since is 'stale', and its differences are listed."""
    root, layout = site
    text = page(root, "comparison")
    table = next(t for t in tables(text) if t and "against this report" in t[0])
    assert len(table) == 2
    for row, seed in zip(table, (1, 2)):
        verdict = load(root, layout.compare / "quick" / "reproduced" / unit_name("sst2", "joint", seed, 0.1) / RESULT_FILE)
        assert row["figures"] == str(verdict["figures_compared"]) and row["row arrays"] == str(verdict["row_arrays_compared"])
        assert shown(verdict["seconds"], row["re-run s"])
    assert table[0]["result"] == "same figures; 2 thresholds differ in float32 tails (max relative 1.9e-06)"
    assert table[0]["against this report"] == "current"
    assert table[1]["result"] == "**1 difference**" and table[1]["against this report"] == "stale: re-run it"
    assert "- full.test: recorded 81.0, re-run 80.5" in text


def test_benchmark_page_holds_every_committed_benchmark_row(site):
    root, _ = site
    text = page(root, "benchmarks")
    files = sorted(p for p in (root / "benchmarks/results").glob("*.json") if p.name != "hashee_study.json")
    found = tables(text)
    assert len(found) == len(files)
    for path, table in zip(files, found):
        bench = load(root, path)
        assert f"`benchmarks/results/{path.name}`" in text and bench["machine"] in text
        assert len(table) == len(bench["rows"])
        # headed by the command the file records (once), else by the script that writes it
        command = bench.get("command") or f"{BENCHMARK_COMMANDS[path.stem]} --out benchmarks/results/{path.name}"
        assert text.count(f"Measured by `{command}`.") == 1 and text.count(command) == 1
        for r, row in zip(bench["rows"], table):
            unit = "tokens/s" if "tokens/s" in row else "samples/s"
            assert row["method"] == r["method"] and row["batch"] == str(r["batch_size"])
            assert shown(r["throughput"], row[unit]) and shown(r["wallclock_speedup"], row["wall-clock speed-up"])


def test_rendering_is_deterministic_and_absent_outputs_name_their_command(site, tmp_path):
    root, layout = site
    render(root, layout, tmp_path / "again")
    first = {p.relative_to(root / "docs/results"): p.read_bytes() for p in (root / "docs/results").rglob("*") if p.is_file()}
    again = {p.relative_to(tmp_path / "again"): p.read_bytes() for p in (tmp_path / "again").rglob("*") if p.is_file()}
    assert first == again

    empty = tmp_path / "empty"  # a checkout without artifacts or benchmark files
    render(empty, Layout(empty / "artifacts", empty / "data", "sst2", 42), empty / "out")
    text = (empty / "out" / "default-run.md").read_text()
    assert "Not generated yet: run `exitflow run`, then `exitflow docs`." in text and "|" not in text
    assert "| [Default pipeline](default-run.md) | not generated yet |" in (empty / "out" / "index.md").read_text()
    assert [p.name for p in (empty / "out" / "img").iterdir()] == [".gitkeep"]


def test_a_damaged_output_is_one_error_naming_the_file_and_its_command(site, tmp_path):
    from models.errors import ExitflowError

    root, _ = site
    broken = tmp_path / "broken"
    shutil.copytree(root / "artifacts", broken / "artifacts")
    summary = broken / "artifacts/generate/seed-42/report/summary.json"
    summary.write_text("{not json")
    moved = Layout(broken / "artifacts", broken / "data", "sst2", 42)
    with pytest.raises(ExitflowError, match=r"generate/seed-42/report/summary.json: not valid JSON .*`exitflow generate`"):
        render(broken, moved, broken / "out")
    summary.write_text(json.dumps({"claim": None}))
    with pytest.raises(ExitflowError, match=r"summary.json: not the JSON `exitflow generate` writes \(no 'operating_points'"):
        render(broken, moved, broken / "out")


def test_benchmark_reports_section_names_each_decoder_and_its_agreement():
    """The generation page's per-decoder section: one block per timed decoder with its exits'
    before/after agreement and the adaptation's cost; a file without reports says to re-run."""
    from tasks.reports.site import benchmark_reports_markdown

    distill = {"points": [15, 30], "agreement_before": [0.123, 1.0], "agreement_after": [0.456, 1.0],
               "agreement_last_after": [0.456, 1.0], "held_out_tokens": 100, "train_tokens": 900, "adapted": True}
    adapt = {"adapt": "lora", "tokens": 900, "full_depth_agreement_with_original": 0.987, "perplexity_original": 10.0,
             "perplexity_adapted": 11.5, "rouge_l_full_depth_vs_original": 0.876}
    text = benchmark_reports_markdown({"reports": {"original": {"distillation": {**distill, "adapted": False}},
                                                   "adapted (lora)": {"distillation": distill, "adaptation": adapt}}})
    original, adapted = text.split("**adapted (lora) decoder**")
    assert "**original decoder**" in original and "| 15 | 0.123 | 0.456 |" in original and "Adaptation" not in original
    assert "adapted backbone" in adapted and "0.987" in adapted and "10.00 -> 11.50" in adapted and "0.876" in adapted
    assert "re-run the benchmark" in benchmark_reports_markdown({"rows": []})


def test_single_run_pages_give_a_direction_never_a_verdict(site):
    """One run is one seed without an interval: the method pages word each paper claim as a direction
    with that caveat; "holds" / "does not hold" belong to the comparison's claims with intervals."""
    from tasks.reports.verdicts import ONE_SEED

    root, _ = site
    worded = 0
    for name in ("consistentee", "past-future", "leco", "generation"):
        text = page(root, name)
        assert not re.search(r"\b(holds|does not hold)\b", text), name
        for line in (line for line in text.splitlines() if "Paper's claim" in line):
            worded += 1
            assert ONE_SEED in line and re.search(r"(in|against) the paper's direction|cannot be read", line), (name, line)
    assert worded >= 2  # at least ConsistentEE and generation state theirs in this fixture
