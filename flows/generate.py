"""Generation flow: early exit in a decoder LLM, ConsistentEE's policy against CALM (issue 13).

``generate_pipeline`` reads like the experiment, inside one parent MLflow run
(experiment ``exitflow-generate``), every step a cached task under
``artifacts/generate/seed-<seed>/``:

1. ``prompts``: templated instructions over ``generate.prompts.sources`` (+ a user JSONL);
2. ``responses``: the decoder's greedy full-depth responses (training targets and the quality
   reference: self-distillation);
3. ``exits``: init (weighted loss over exit points, exit norms only), then ConsistentEE rounds
   (REINFORCE policy + Eq. 6 exit-norm step), in a nested run ``train``;
4. ``evaluate``: one nested run per criterion (static, CALM softmax / saturation, policy), each
   sweeping its thresholds on dev and test prompts;
5. ``report``: ROUGE-L vs speed-up curves, the table at ``generate.speedups`` with the claim
   check, and example responses (MLflow artifacts).

Measured tokens/s come from ``benchmarks/bench_generation.py``, not from this flow.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from flows.layout import Layout, prepare_task_data
from flows.tracking import parent_run, use_experiment
from tasks.caching import run_cached
from tasks.config import load_params
from tasks.generation import (
    EXIT_SETS,
    build_prompts,
    evaluate_criterion,
    evaluation_part,
    full_depth_responses,
    train_exits,
    training_part,
)
from tasks.reports.generation import report_generation
from tasks.tracking import MlflowLogger
from tasks.versioning import record_pipeline_outputs

SECTIONS = ("seed", "generate")


@flow(name="generate", log_prints=True)
def generate_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Prompts -> full-depth responses -> exits -> every criterion -> report (one parent MLflow run)."""
    params = load_params(params_path, overrides or [])
    cfg = params.generate
    missing = [s for s in cfg.prompts.sources if s not in params.data.tasks and s not in params.data.custom]
    if missing:
        raise ValueError(f"generate.prompts.sources: {missing} are not prepared tasks; data.tasks has {', '.join(params.data.tasks)}")
    use_experiment(params, "exitflow-generate")
    prepare_task_data(params)
    layout = Layout.from_params(params)
    base = layout.generate
    with parent_run(params, "generate", SECTIONS):
        prompts = run_cached(build_prompts, out_dir=base / "prompts", prompts=cfg.prompts, data_dir=layout.data,
                             seed=params.seed)
        mlflow.log_params({f"prompts_{k}": v for k, v in prompts["counts"].items()})
        responses = run_cached(full_depth_responses, out_dir=base / "responses", decoder=cfg.decoder,
                               max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                               prompts_dir=Path(prompts["train"]).parent)
        responses_dir = Path(responses["train"]).parent
        with mlflow.start_run(run_name="train", nested=True):
            trained = run_cached(train_exits, out_dir=base / "exits", generate_cfg=training_part(cfg),
                                 responses_dir=responses_dir, seed=params.seed,
                                 logger=MlflowLogger(mlflow.active_run().info.run_id))
            mlflow.log_artifact(trained["history"], "exits")
        curves, examples = {}, None
        for criterion in cfg.criteria:
            exits_dir = Path(trained[EXIT_SETS.get(criterion, "init")])
            with mlflow.start_run(run_name=criterion, nested=True):
                mlflow.log_params({"criterion": criterion, "thresholds": cfg.criteria[criterion], "exits": exits_dir.name})
                evaluated = run_cached(evaluate_criterion, out_dir=base / "evaluate" / criterion,
                                       generate_cfg=evaluation_part(cfg, criterion), criterion=criterion,
                                       responses_dir=responses_dir, exits_dir=exits_dir,
                                       logger=MlflowLogger(mlflow.active_run().info.run_id))
                mlflow.log_artifact(evaluated["curve"], "generate")
                mlflow.log_artifact(evaluated["examples"], "generate")
            curves[criterion] = evaluated["curve"]
            if criterion == "policy" or examples is None:
                examples = evaluated["examples"]
        report = report_generation(curves, examples, cfg.speedups, cfg.rouge_target, base / "report",
                                   f"{cfg.decoder}: ROUGE-L vs speed-up (test prompts)")
        for key in ("plot", "report", "examples", "summary"):
            mlflow.log_artifact(report[key], "generate")
        if report["claim_holds"] is not None:
            mlflow.set_tag("claim_holds", str(report["claim_holds"]).lower())
    if not overrides:  # dvc.lock describes params.yaml as written
        record_pipeline_outputs(params.root, ["generate"])
    print(report["table"])
    return report
