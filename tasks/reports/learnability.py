"""The learnability report (paper Table 1 shape): per study, micro P/R/F1 of the negative label and
accuracy of each difficulty predictor, a bar chart of F1 next to Majority, and the human study."""

from __future__ import annotations

from pathlib import Path

from tasks.io import atomic_write_json, atomic_write_text
from tasks.plots import grouped_bar_plot
from tasks.reports.tables import markdown_table

PREDICTOR_NAMES = {"majority": "Majority", "linear_m": "Linear-M", "linear_b": "Linear-B", "bilstm": "BiLSTM", "bert": "BERT"}


def predictor_markdown(results: dict[str, dict[str, dict]]) -> str:
    """One row per (study, predictor): precision, recall, F1, accuracy and F1 gain over Majority."""
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    rows = []
    for study, by_predictor in results.items():
        majority_f1 = by_predictor.get("majority", {}).get("test", {}).get("f1")
        for predictor, r in by_predictor.items():
            t = r["test"]
            gain = None if t["f1"] is None or majority_f1 is None else t["f1"] - majority_f1
            rows.append([study, PREDICTOR_NAMES.get(predictor, predictor), fmt(t["precision"]), fmt(t["recall"]),
                         fmt(t["f1"]), fmt(t["accuracy"]), "-" if gain is None else f"{gain:+.1f}"])
    return markdown_table(["study", "predictor", "precision", "recall", "F1", "accuracy", "F1 - Majority F1"], rows)


def learnability_report(results: dict[str, dict[str, dict]], human: dict | None, out_dir: Path) -> dict:
    """Paper Table 1 shape on the predictor-test part; the human study's last-epoch accuracies.
    ``results[study][predictor]`` = ``train_difficulty_predictor`` output. Writes ``results.md``,
    ``results.json``, ``f1.png``; returns ``{"table", "plot", "json"}``."""
    text = "Micro-averaged precision / recall / F1 of the negative label (an exit that would be wrong), predictor-test part.\n\n"
    text += predictor_markdown(results) + "\n"
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
