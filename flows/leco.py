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
and seed; only the exits and the objective differ (``baseline_config``). Wall-clock numbers
come from ``benchmarks/bench_leco.py``, not from this flow.
"""

from __future__ import annotations

import mlflow
from prefect import flow

from flows.layout import Layout, TrainedDirs, common, prepare_task_data
from flows.past_future import MIN_SWEEP_POINTS, past_future_criteria, past_future_train_config, with_task
from flows.methods import exits_cell, register_method
from flows.tracking import log_strategy, parent_run, use_experiment
from tasks.backbones import backbone_num_layers
from tasks.caching import run_cached
from tasks.config import Params, TrainConfig, load_params
from tasks.evaluate import evaluate_exits
from tasks.leco import check_checkpoint_architecture, derive_exits, load_architecture, search_exits
from tasks.reports.leco import compare_leco
from tasks.tracking import MlflowLogger
from tasks.train import train_multi_exit
from tasks.versioning import record_pipeline_outputs

SECTIONS = ("seed", "backbone", "train", "evaluate", "past_future", "leco")
STEPS = ("search", "derive", "train", "compare")


def baseline_config(params: Params, name: str) -> tuple[TrainConfig, str, list[str]]:
    """``(train config, objective, criteria)`` of a baseline of ``leco.baselines``: JT with
    linear or MHA exits (d_e 64, 4 heads), ALT (BERxiT alternating) with ``train.head``, 2ST
    with MHA exits, Global Past-Future (``past_future.in_default_run`` with the future)."""
    train = params.train
    if name == "past-future":
        return (past_future_train_config(params, params.past_future.in_default_run or "concat", True),
                params.past_future.objective, past_future_criteria(params))
    head, objective = {"jt-linear": ("linear", "joint"), "jt-mha": ("mha", "joint"), "alt": (train.head, "alternating"),
                       "2st-mha": ("mha", "two_stage")}[name]
    return train.model_copy(update={"head": head, "head_options": {}}), objective, ["patience"]


def train_evaluate(params: Params, name: str, train: TrainConfig, objective: str, criteria: list[str],
                   dirs: TrainedDirs) -> tuple[dict, dict]:
    """Train (cached) and evaluate (cached; offline sweep and real-exit check, no wall-clock)
    one model inside the active nested MLflow run, and log it there."""
    shared = common(params)
    logger = MlflowLogger(mlflow.active_run().info.run_id)
    trained = run_cached(train_multi_exit, out_dir=dirs.train, train=train, backbone=params.backbone, strategy=objective,
                         logger=logger, **shared)
    evaluate = params.evaluate.model_copy(update={"criteria": criteria, "timing_batch_sizes": [],
                                                  "cobee_patience": params.leco.cobee_patience,
                                                  "sweep_points": max(params.evaluate.sweep_points, MIN_SWEEP_POINTS)})
    evaluated = run_cached(evaluate_exits, out_dir=dirs.evaluate, evaluate=evaluate, backbone=params.backbone, train=train,
                           ckpt_dir=trained["checkpoint"], logger=logger, **shared)
    log_strategy(params, f"leco/{name}", trained, evaluated, register=False)
    return trained, evaluated


def leco_train_config(params: Params, architecture: list[dict]) -> TrainConfig:
    """``train``'s budget with the derived LECO exits."""
    return params.train.model_copy(update={"head": "leco", "head_options": params.leco.exits(architecture)})


def run_leco(params: Params, until: str = "compare") -> dict:
    """The LECO steps up to ``until`` (one of ``STEPS``) on ``train.task``, inside the active run."""
    cfg, layout, shared = params.leco, Layout.from_params(params), common(params)
    out: dict = {}
    with mlflow.start_run(run_name="search", nested=True):
        mlflow.log_params({"search_epochs": cfg.search_epochs, "inner_size": cfg.inner_size, "lr": params.train.lr,
                           "architecture_lr": cfg.architecture_lr, "task": params.train.task})
        out["search"] = run_cached(search_exits, out_dir=layout.leco_search, train=params.train, backbone=params.backbone,
                                   leco=cfg, logger=MlflowLogger(mlflow.active_run().info.run_id), **shared)
        mlflow.log_artifact(out["search"]["architecture_weights"], "leco")
        mlflow.log_artifact(out["search"]["plot"], "leco")
        if until == "search":
            return out
        out["derive"] = run_cached(derive_exits, out_dir=layout.leco_derive,
                                   architecture_weights=out["search"]["architecture_weights"])
        mlflow.log_artifact(out["derive"]["architecture"], "leco")
        mlflow.log_text(out["derive"]["table"], "leco/architecture.md")
    if until == "derive":
        return out
    architecture = load_architecture(out["derive"]["architecture"], backbone_num_layers(params.backbone.name))
    leco_dirs = layout.leco_model
    with mlflow.start_run(run_name="leco", nested=True):
        mlflow.log_params({"objective": "joint", "inner_size": cfg.inner_size, "task": params.train.task})
        train = leco_train_config(params, architecture)
        if until == "train":
            out["train"] = run_cached(train_multi_exit, out_dir=leco_dirs.train, train=train, backbone=params.backbone,
                                      strategy="joint", logger=MlflowLogger(mlflow.active_run().info.run_id), **shared)
            check_checkpoint_architecture(out["train"]["checkpoint"], out["derive"]["architecture"])
            return out
        out["train"], out["evaluate"] = train_evaluate(params, "leco", train, "joint", cfg.criteria, leco_dirs)
        check_checkpoint_architecture(out["train"]["checkpoint"], out["derive"]["architecture"])
    evaluations = {"leco": leco_dirs.evaluate}
    for name in cfg.baselines:
        with mlflow.start_run(run_name=name, nested=True):
            train, objective, criteria = baseline_config(params, name)
            mlflow.log_params({"baseline": name, "head": train.head, "objective": objective, "task": params.train.task})
            train_evaluate(params, name, train, objective, criteria, layout.leco_baseline(name))
            evaluations[name] = layout.leco_baseline(name).evaluate
    exiting = {"leco": leco_dirs.evaluate, **({"jt-linear": evaluations["jt-linear"]} if "jt-linear" in evaluations else {})}
    report = compare_leco(evaluations, exiting, cfg.speedups, layout.leco_report, params.train.task, params.seed)
    mlflow.log_artifact(report["plot"], "leco")
    mlflow.log_artifact(report["comparison"], "leco")
    mlflow.log_text(report["table"], "leco/comparison.md")
    if report["training_claim"] is not None:
        mlflow.log_metric("training_claim_margin", report["training_claim"]["margin"])
        mlflow.set_tag("training_claim_holds", str(report["training_claim"]["holds"]).lower())
    for c in report["exiting_claim"]:
        if c["checked"]:
            mlflow.log_metric(f"cobee_margin_{c['at']}", c["margin"])
    out["report"] = report
    return out


@register_method("leco", regression=False)  # COBEE needs classes (models/leco.py)
def leco_cell(params: Params) -> dict:
    """LECO: search (``leco.search_epochs``) -> derive -> retrain the derived exits jointly ->
    ``leco.criteria`` (COBEE first) on the retrained model, as ``run_leco`` does without baselines."""
    cfg, layout, shared = params.leco, Layout.from_params(params), common(params)
    search = run_cached(search_exits, out_dir=layout.leco_search, train=params.train, backbone=params.backbone, leco=cfg,
                        **shared)
    derived = run_cached(derive_exits, out_dir=layout.leco_derive, architecture_weights=search["architecture_weights"])
    architecture = load_architecture(derived["architecture"], backbone_num_layers(params.backbone.name))
    leco_params = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"cobee_patience": cfg.cobee_patience})})
    return exits_cell(leco_params, layout.leco_model, leco_train_config(params, architecture), "joint", cfg.criteria)


@flow(name="leco", log_prints=True)
def leco_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None, tasks: list[str] | None = None,
                  until: str = "compare") -> dict:
    """LECO on each of ``leco.tasks`` (or ``tasks``) up to step ``until``: one parent MLflow run per task."""
    if until not in STEPS:
        raise ValueError(f"unknown LECO step {until!r}; choose one of {', '.join(STEPS)}")
    params = load_params(params_path, overrides or [])
    use_experiment(params, "exitflow-leco")
    prepare_task_data(params)
    results = {}
    for task_name in tasks or params.leco.tasks:
        if task_name not in params.data.tasks and task_name not in params.data.custom:
            raise ValueError(f"leco.tasks: {task_name!r} is not a prepared task; data.tasks has {', '.join(params.data.tasks)}")
        task_params = with_task(params, task_name)
        with parent_run(task_params, f"leco-{task_name}", SECTIONS):
            results[task_name] = run_leco(task_params, until)
        if not overrides:  # dvc.lock describes params.yaml as written
            done = STEPS[: STEPS.index(until) + 1]
            record_pipeline_outputs(params.root, [f"leco_{step}@{task_name}" for step in done])
        if "report" in results[task_name]:
            print(results[task_name]["report"]["table"])
        elif "derive" in results[task_name]:
            print(results[task_name]["derive"]["table"])
    return results
