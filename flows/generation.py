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

import json
from pathlib import Path

import mlflow
from prefect import flow

from flows.context import RunContext, start_flow
from flows.tracking import active_logger, describe, log_curve
from tasks.caching import run_cached
from tasks.metric_schema import NOT_APPLICABLE, front_readings
from tasks.generation import EXIT_SETS, evaluate_criterion, full_depth_responses, train_exits
from tasks.prompts import build_prompts
from tasks.reports.generation import report_generation
from tasks.versioning import record_pipeline_outputs

SECTIONS = ("seed", "generate")


def prompts_and_responses(ctx: RunContext) -> Path:
    """Steps 1-2 (cached): the prompts, then the decoder's full-depth responses; returns their folder."""
    cfg, base = ctx.params.generate, ctx.layout.generate
    prompts = run_cached(build_prompts, out_dir=base / "prompts", prompts=cfg.prompts, data_dir=ctx.layout.data,
                         seed=ctx.params.seed)
    mlflow.log_params({f"prompts_{k}": v for k, v in prompts["counts"].items()})
    responses = run_cached(full_depth_responses, out_dir=base / "responses", decoding=cfg.decoding,
                           prompts_dir=Path(prompts["train"]).parent)
    return Path(responses["train"]).parent


def evaluate_criteria(ctx: RunContext, trained: dict, responses_dir: Path) -> tuple[dict, str]:
    """Step 4: every criterion in its nested run (cached); ``(curve file per criterion, examples file)``."""
    cfg, base = ctx.params.generate, ctx.layout.generate
    curves, examples = {}, None
    for criterion in cfg.criteria:
        exits_dir = Path(trained[EXIT_SETS.get(criterion, "init")])
        with mlflow.start_run(run_name=criterion, nested=True):
            mlflow.log_params({"criterion": criterion, "thresholds": cfg.criteria[criterion], "exits": exits_dir.name})
            evaluated = run_cached(evaluate_criterion, out_dir=base / "evaluate" / criterion, decoding=cfg.decoding,
                                   criterion=criterion, thresholds=cfg.criteria[criterion], example_count=cfg.examples,
                                   responses_dir=responses_dir, exits_dir=exits_dir, logger=active_logger())
            mlflow.log_artifact(evaluated["curve"], "generate")
            mlflow.log_artifact(evaluated["examples"], "generate")
            log_generation_curve(criterion, evaluated["curve"])
        curves[criterion] = evaluated["curve"]
        if criterion == "policy" or examples is None:
            examples = evaluated["examples"]
    return curves, examples


def log_generation_curve(criterion: str, curve_path) -> None:
    """A criterion's sweep in the schema (quality = test ROUGE-L x 100): ``curve.json`` and the
    ``curve_*_quality`` step metrics by layer speed-up, ``test_quality_at_<t>x`` on the dev-chosen front."""
    rows = json.loads(Path(curve_path).read_text())
    sides = {(r["threshold"], r["split"]): {"threshold": r["threshold"], "quality": 100 * r["rouge_l"],
                                            "layer_speedup": r["layer_speedup"], "flops_speedup": r["flops_speedup"]}
             for r in rows}
    points = [{"dev": sides[(t, "dev")], "test": sides[(t, "test")]} for t, split in sides if split == "test"
              and (t, "dev") in sides]
    if not points:
        return
    mlflow.log_params({"method": "generation", "strategy": NOT_APPLICABLE})
    mlflow.log_metrics(front_readings(points))
    log_curve(points)
    describe(f"Generation, exiting by {criterion}: ROUGE-L against the full-depth responses (quality = ROUGE-L x 100) "
             "over the threshold sweep. Trade-off: chart `curve_test_quality` against Step (= test layer speed-up x 100) "
             "or open `curve.json`; `test_quality_at_<t>x` reads the dev-chosen front.")


@flow(name="generate", log_prints=True)
def generate_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Prompts -> full-depth responses -> exits -> every criterion -> report (one parent MLflow run)."""
    ctx = start_flow(params_path, overrides, "exitflow-generate",
                     check=lambda c: c.check_prepared(c.params.generate.prompts.sources, "generate.prompts.sources"))
    cfg, base = ctx.params.generate, ctx.layout.generate
    with ctx.parent_run("generate", SECTIONS, method="generation"):
        responses_dir = prompts_and_responses(ctx)
        with mlflow.start_run(run_name="train", nested=True):
            trained = run_cached(train_exits, out_dir=base / "exits", decoding=cfg.decoding, exit_config=cfg.exit_config,
                                 init=cfg.init, policy=cfg.policy, responses_dir=responses_dir, seed=ctx.params.seed,
                                 logger=active_logger())
            mlflow.log_artifact(trained["history"], "exits")
        curves, examples = evaluate_criteria(ctx, trained, responses_dir)
        report = report_generation(curves, examples, cfg.speedups, cfg.rouge_target, base / "report",
                                   f"{cfg.decoder}: ROUGE-L vs speed-up (test prompts)")
        for key in ("plot", "report", "examples", "summary"):
            mlflow.log_artifact(report[key], "generate")
        if report["claim_holds"] is not None:
            mlflow.set_tag("claim_holds", str(report["claim_holds"]).lower())
    if not overrides:  # dvc.lock describes params.yaml as written
        record_pipeline_outputs(ctx.params.root, ["generate"])
    print(report["table"])
    return report
