"""LECO flow: search the exits' architecture, derive it, retrain it, compare (paper Table 2 and
Figure 2 shapes).

``run_leco`` reads like the experiment, inside one parent MLflow run per task:

1. ``search``: ``search_exits`` (cached) in a nested run: the architecture weights as step
   metrics per epoch, the heat map, the weights file;
2. ``derive``: ``derive_exits`` (cached): ``architecture.json`` (DVC-tracked) and its table,
   logged to the search run;
3. ``train``: ``train_multi_exit`` with the derived exits, fresh exit weights on the pretrained
   backbone, objective ``joint``, selected on dev (nested run ``leco``);
4. ``compare``: the LECO model evaluated with ``leco.criteria`` (COBEE, entropy, patience, LTE),
   each baseline trained and evaluated in its own nested run, and ``compare_leco``.

Every model uses ``train``'s budget (epochs, subsample, lr, batch size), pooling, exit scorer
and seed; only the exits and the objective differ (``baseline_model``). Wall-clock numbers
come from ``benchmarks/bench_leco.py``, not from this flow.
"""

from __future__ import annotations

import mlflow
from prefect import flow

from flows.context import RunContext, start_flow
from flows.past_future import MIN_SWEEP_POINTS, default_model as past_future_model
from flows.steps import ExitModel, compare_evaluate, exit_model_cell, train_exit_model, train_then_evaluate
from flows.tracking import active_logger, log_exit_run
from tasks.backbones import backbone_num_layers
from tasks.caching import run_cached
from config.params import ConfigError, EvaluateConfig, TrainConfig
from tasks.leco import check_checkpoint_architecture, derive_exits, load_architecture, search_exits
from tasks.reports.leco import compare_leco
from tasks.versioning import record_pipeline_outputs

SECTIONS = ("seed", "backbone", "train", "evaluate", "past_future", "leco")
STEPS = ("search", "derive", "train", "compare")


def study_evaluate(ctx: RunContext, criteria: list[str]) -> EvaluateConfig:
    """The study's evaluation: ``criteria`` on a fine sweep, COBEE's patience, no wall-clock."""
    return ctx.params.evaluate.model_copy(update={"criteria": criteria, "timing_batch_sizes": [],
                                                  "cobee_patience": ctx.params.leco.cobee_patience,
                                                  "sweep_points": max(ctx.params.evaluate.sweep_points, MIN_SWEEP_POINTS)})


def baseline_model(ctx: RunContext, name: str) -> ExitModel:
    """A baseline of ``leco.baselines``: JT with linear or MHA exits (d_e 64, 4 heads), ALT
    (BERxiT alternating) with ``train.head``, 2ST with MHA exits, Global Past-Future
    (``past_future.in_default_run`` with the future); all with ``train``'s budget."""
    dirs = ctx.layout.leco_baseline(name)
    if name == "past-future":
        model = past_future_model(ctx)
        return ExitModel(model.train, model.objective, dirs, study_evaluate(ctx, model.evaluate.criteria))
    train = ctx.params.train
    head, objective = {"jt-linear": ("linear", "joint"), "jt-mha": ("mha", "joint"), "alt": (train.head, "alternating"),
                       "2st-mha": ("mha", "two_stage")}[name]
    return ExitModel(train.model_copy(update={"head": head, "head_options": {}}), objective, dirs,
                     study_evaluate(ctx, ["patience"]))


def leco_train_config(ctx: RunContext, architecture: list[dict]) -> TrainConfig:
    """``train``'s budget with the derived LECO exits."""
    return ctx.params.train.model_copy(update={"head": "leco", "head_options": ctx.params.leco.exits(architecture)})


def search_and_derive(ctx: RunContext, logger=None, derive: bool = True) -> tuple[dict, dict | None]:
    """The supernet search and (``derive``) the derived architecture, both cached."""
    params = ctx.params
    search = run_cached(search_exits, out_dir=ctx.layout.leco_search, train=params.train, backbone=params.backbone,
                        leco=params.leco, logger=logger, **ctx.inputs.kwargs())
    if not derive:
        return search, None
    return search, run_cached(derive_exits, out_dir=ctx.layout.leco_derive,
                              architecture_weights=search["architecture_weights"])


def leco_model(ctx: RunContext, derived: dict, evaluate: EvaluateConfig) -> ExitModel:
    """The derived exits on the pretrained backbone, trained jointly."""
    architecture = load_architecture(derived["architecture"], backbone_num_layers(ctx.params.backbone.name))
    return ExitModel(leco_train_config(ctx, architecture), "joint", ctx.layout.leco_model, evaluate)


def run_search(ctx: RunContext, until: str) -> dict:
    """Steps search and derive in the nested run ``search`` (derive only when ``until`` goes past search)."""
    cfg = ctx.params.leco
    with mlflow.start_run(run_name="search", nested=True):
        mlflow.log_params({"search_epochs": cfg.search_epochs, "inner_size": cfg.inner_size, "lr": ctx.params.train.lr,
                           "architecture_lr": cfg.architecture_lr, "task": ctx.params.train.task})
        search, derived = search_and_derive(ctx, active_logger(), derive=until != "search")
        mlflow.log_artifact(search["architecture_weights"], "leco")
        mlflow.log_artifact(search["plot"], "leco")
        if derived is not None:
            mlflow.log_artifact(derived["architecture"], "leco")
            mlflow.log_text(derived["table"], "leco/architecture.md")
    return {"search": search, **({"derive": derived} if derived is not None else {})}


def run_compare(ctx: RunContext, evaluations: dict) -> dict:
    """Each baseline in its nested run, then ``compare_leco``, logged to the active run."""
    cfg = ctx.params.leco
    for name in cfg.baselines:
        with mlflow.start_run(run_name=name, nested=True):
            model = baseline_model(ctx, name)
            mlflow.log_params({"baseline": name, "head": model.train.head, "objective": model.objective,
                               "task": ctx.params.train.task})
            done = train_then_evaluate(ctx, model, active_logger())
            log_exit_run(ctx.params, f"leco/{name}", done.trained, done.evaluated, register=False, method=name)
            evaluations[name] = model.dirs.evaluate
    exiting = {"leco": evaluations["leco"], **({"jt-linear": evaluations["jt-linear"]} if "jt-linear" in evaluations else {})}
    report = compare_leco(evaluations, exiting, cfg.speedups, ctx.layout.leco_report, ctx.params.train.task, ctx.params.seed)
    mlflow.log_artifact(report["plot"], "leco")
    mlflow.log_artifact(report["comparison"], "leco")
    mlflow.log_text(report["table"], "leco/comparison.md")
    if report["training_claim"] is not None:
        mlflow.log_metric("training_claim_margin", report["training_claim"]["margin"])
        mlflow.set_tag("training_claim_holds", str(report["training_claim"]["holds"]).lower())
    for c in report["exiting_claim"]:
        if c["checked"]:
            mlflow.log_metric(f"cobee_margin_{c['at']}", c["margin"])
    return report


def run_leco(ctx: RunContext, until: str = "compare") -> dict:
    """The LECO steps up to ``until`` (one of ``STEPS``) on ``train.task``, inside the active run."""
    out = run_search(ctx, until)
    if until in ("search", "derive"):
        return out
    model = leco_model(ctx, out["derive"], study_evaluate(ctx, ctx.params.leco.criteria))
    with mlflow.start_run(run_name="leco", nested=True):
        mlflow.log_params({"objective": "joint", "inner_size": ctx.params.leco.inner_size, "task": ctx.params.train.task})
        if until == "train":
            out["train"] = train_exit_model(ctx, model.train, model.objective, model.dirs.train, active_logger())
            check_checkpoint_architecture(out["train"]["checkpoint"], out["derive"]["architecture"])
            return out
        done = train_then_evaluate(ctx, model, active_logger())
        log_exit_run(ctx.params, "leco/leco", done.trained, done.evaluated, register=False, method="leco")
        out["train"], out["evaluate"] = done.trained, done.evaluated
        check_checkpoint_architecture(out["train"]["checkpoint"], out["derive"]["architecture"])
    out["report"] = run_compare(ctx, {"leco": model.dirs.evaluate})
    return out


def leco_cell(ctx: RunContext, variant: str) -> dict:
    """LECO: search (``leco.search_epochs``) -> derive -> retrain the derived exits jointly ->
    ``leco.criteria`` (COBEE first) on the retrained model, as ``run_leco`` does without baselines."""
    _, derived = search_and_derive(ctx)
    cfg = ctx.params.leco
    evaluate = compare_evaluate(ctx, cfg.criteria, cobee_patience=cfg.cobee_patience)
    return exit_model_cell(ctx, leco_model(ctx, derived, evaluate))


@flow(name="leco", log_prints=True)
def leco_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None, tasks: list[str] | None = None,
                  until: str = "compare") -> dict:
    """LECO on each of ``leco.tasks`` (or ``tasks``) up to step ``until``: one parent MLflow run per task."""
    if until not in STEPS:
        raise ConfigError(f"unknown LECO step {until!r}; choose one of {', '.join(STEPS)}")
    ctx = start_flow(params_path, overrides, "exitflow-leco")
    tasks = tasks or ctx.params.leco.tasks
    ctx.check_prepared(tasks, "leco.tasks")
    results = {}
    for task_name in tasks:
        task_ctx = ctx.for_task(task_name)
        with task_ctx.parent_run(f"leco-{task_name}", SECTIONS, method="leco"):
            results[task_name] = run_leco(task_ctx, until)
        if not overrides:  # dvc.lock describes params.yaml as written
            record_pipeline_outputs(ctx.params.root, [f"leco_{step}@{task_name}" for step in STEPS[: STEPS.index(until) + 1]])
        shown = results[task_name].get("report") or results[task_name].get("derive")
        if shown is not None:
            print(shown["table"])
    return results


def leco_command(params_path: str, overrides: list[str], task: list[str] | None = None, until: str = "compare") -> None:
    """``exitflow leco``: LECO on ``task`` (default ``leco.tasks``) up to step ``until``."""
    if until not in STEPS:
        raise ConfigError(f"--until {until!r} is not a LECO step; choose one of {', '.join(STEPS)}")
    leco_pipeline(params_path, overrides, task or None, until)
