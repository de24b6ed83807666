"""The learnability study (HashEE paper, section 2): can a model predict how hard an instance is?

``learnability`` reads like the study: build the difficulty datasets (published SNLI set;
``train.task`` dev annotated by the default run's ``joint`` model; CoNLL-2003 dev annotated by a
multi-exit token classifier) -> train every predictor on each -> human-defined difficulty ->
one table (paper Table 1) and one F1 bar chart in the MLflow experiment ``learnability``.

Artifacts (``flows/layout.py``): the sentence study and the report under the task's folder
(``artifacts/<task>/seed-<seed>/learnability/``); the studies that read no ``train.task`` data
(snli_model, CoNLL-2003, human) under ``artifacts/learnability/seed-<seed>/``. The datasets are DVC
outputs of the ``learnability`` stage.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from flows.context import RunContext, start_flow
from flows.steps import train_exit_model
from flows.tracking import folder_dataset
from tasks.caching import run_cached
from tasks.difficulty import (
    build_sentence_difficulty,
    build_token_difficulty,
    load_published_difficulty,
    train_token_annotator,
)
from tasks.learnability import human_difficulty, train_difficulty_predictor
from tasks.reports.learnability import PREDICTOR_NAMES, learnability_report
from tasks.versioning import record_pipeline_outputs

ANNOTATOR_STRATEGY = "joint"


def build_datasets(ctx: RunContext) -> dict[str, tuple[Path, Path | None, str]]:
    """``{name: (dataset_dir, annotator_dir or None, study)}`` for the configured model-defined
    studies; ``study`` is the ``learnability.studies`` entry, the sentence study is named after
    ``train.task``."""
    params, layout = ctx.params, ctx.layout
    cfg = params.learnability
    out = {}
    if "snli_model" in cfg.studies:
        dataset = layout.learnability_dataset("snli_model")
        run_cached(load_published_difficulty, out_dir=dataset,
                   source=params.path(cfg.difficulty_dir) / "snli_model", dev_fraction=cfg.published_dev_fraction,
                   seed=params.seed)
        out["snli_model"] = (dataset, None, "snli_model")
    if "sentence" in cfg.studies:
        annotator = layout.train(ANNOTATOR_STRATEGY)  # the default run's joint model, reused when trained
        train_exit_model(ctx, params.train, ANNOTATOR_STRATEGY, annotator)
        dataset = layout.learnability_dataset("sentence")
        run_cached(build_sentence_difficulty, out_dir=dataset, annotator_dir=annotator / "checkpoint",
                   backbone=params.backbone, data_dir=layout.data, fractions=cfg.parts, seed=params.seed,
                   device=params.device)
        out[params.train.task] = (dataset, annotator / "checkpoint", "sentence")
    if "token" in cfg.studies:
        annotator = run_cached(train_token_annotator, out_dir=layout.token_annotator, cfg=cfg, backbone=params.backbone,
                               conll_dir=params.path(cfg.conll_dir), seed=params.seed, device=params.device)
        dataset = layout.learnability_dataset("token")
        run_cached(build_token_difficulty, out_dir=dataset, annotator_dir=Path(annotator["checkpoint"]),
                   backbone=params.backbone, conll_dir=params.path(cfg.conll_dir), fractions=cfg.parts, seed=params.seed,
                   device=params.device)
        out["conll2003"] = (dataset, Path(annotator["checkpoint"]), "token")
    return out


def applicable(predictor: str, study: str, annotator: Path | None) -> bool:
    """Linear-M is sentence-level only (as in the paper); Linear-B needs the annotator's states."""
    if predictor == "linear_m" and study == "conll2003":
        return False
    return not (predictor == "linear_b" and annotator is None)


def train_predictor(ctx: RunContext, study: str, kind: str, predictor: str, dataset: Path, annotator: Path | None) -> dict:
    """One predictor on one study's dataset (cached), logged to the active nested run."""
    params = ctx.params
    r = run_cached(train_difficulty_predictor, out_dir=ctx.layout.learnability_predictor(kind, predictor),
                   predictor=predictor, cfg=params.learnability, backbone=params.backbone, dataset_dir=dataset,
                   annotator_dir=annotator, seed=params.seed, device=params.device)
    mlflow.log_params({"study": study, "predictor": predictor})
    mlflow.log_metrics({f"test_{k}": v for k, v in r["test"].items() if isinstance(v, float)})
    mlflow.log_metrics({f"dev_{k}": v for k, v in r["dev"].items() if isinstance(v, float)})
    mlflow.log_metrics({k: v for k, v in r.items() if k.startswith("negative_share")})
    for k, acc in enumerate(r["test"]["layer_accuracy"], start=1):
        mlflow.log_metric("test_layer_accuracy", acc, step=k)
    for h in r["history"]:
        mlflow.log_metrics({k: v for k, v in h.items() if k != "epoch" and v is not None}, step=h["epoch"])
    shown = {k: "-" if r["test"][k] is None else f"{r['test'][k]:.1f}" for k in ("precision", "recall", "f1")}
    print(f"[learnability] {study} {predictor}: P {shown['precision']} R {shown['recall']} F1 {shown['f1']}")
    return r


def log_datasets(inputs: list) -> None:
    """Difficulty datasets (``flows.tracking.folder_dataset``) as the active run's inputs."""
    mlflow.MlflowClient().log_inputs(mlflow.active_run().info.run_id, inputs)


def run_human_study(ctx: RunContext) -> dict:
    """Human-defined difficulty (snli_human), in its nested run, its source folder as the dataset."""
    params = ctx.params
    source = params.path(params.learnability.difficulty_dir) / "snli_human"
    with mlflow.start_run(run_name="human/BERT", nested=True):
        log_datasets([folder_dataset(params, source, "difficulty-snli_human", "train")])
        human = run_cached(human_difficulty, out_dir=ctx.layout.human_difficulty, cfg=params.learnability,
                           backbone=params.backbone, source=source,
                           seed=params.seed, device=params.device)
        for h in human["history"]:
            mlflow.log_metrics({"train_accuracy": h["train_accuracy"], "test_accuracy": h["test_accuracy"]}, step=h["epoch"])
        mlflow.log_artifact(human["plot"], "plots")
    return human


@flow(name="learnability", log_prints=True)
def learnability(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Every configured study and predictor; one nested MLflow run per (study, predictor)."""
    ctx = start_flow(params_path, overrides, "learnability")
    cfg = ctx.params.learnability
    results: dict[str, dict[str, dict]] = {}
    human = None
    with ctx.parent_run("learnability", ("seed", "backbone", "learnability"), method="learnability",
                          identity={"task": "-"}):
        studies = build_datasets(ctx)
        inputs = {study: folder_dataset(ctx.params, dataset, f"difficulty-{study}", "train")
                  for study, (dataset, _, _) in studies.items()}  # digest: DVC's hash of the stage's output folder
        if inputs:
            log_datasets(list(inputs.values()))
        for study, (dataset, annotator, kind) in studies.items():
            mlflow.log_artifact(str(dataset / "result.json"), f"datasets/{study}")
            results[study] = {}
            for predictor in cfg.predictors:
                if not applicable(predictor, study, annotator):
                    print(f"[learnability] {study}: {predictor} not applicable (skipped)")
                    continue
                with mlflow.start_run(run_name=f"{study}/{PREDICTOR_NAMES[predictor]}", nested=True):
                    log_datasets([inputs[study]])
                    results[study][predictor] = train_predictor(ctx, study, kind, predictor, dataset, annotator)
        if "human" in cfg.studies:
            human = run_human_study(ctx)
        report = learnability_report(results, human, ctx.layout.learnability_report)
        mlflow.log_artifact(report["plot"], "report")
        mlflow.log_text(report["table"], "report/results.md")
    if not overrides and set(cfg.studies) == {"human", "snli_model", "sentence", "token"}:
        record_pipeline_outputs(ctx.params.root, ["learnability"])  # dvc.lock describes params.yaml as written
    print(report["table"])
    return {"report": report, "results": results, "human": human}
