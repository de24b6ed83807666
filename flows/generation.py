"""Generation flow: early exit in a decoder LLM, ConsistentEE's policy against CALM (issue 13).

``generate_pipeline`` reads like the experiment, inside one parent MLflow run
(experiment ``exitflow-generate``), every step a cached task under
``artifacts/generate/seed-<seed>/``:

1. ``prompts``: templated instructions over ``generate.prompts.sources`` (+ a user JSONL);
2. ``responses``: the decoder's greedy full-depth responses (training targets and the quality
   reference: self-distillation);
3. ``distill-data``: teacher-forced text (responses, prepared sentences, CoNLL) with the original
   full model's top-k next-token distributions (``generate.distill``; skipped at ``tokens: 0``);
4. ``adapt`` (``generate.adapt: lora | full``): LayerSkip-style backbone adaptation on those
   self-distilled targets; every later step runs on the adapted decoder;
5. ``distill``: the exits distilled towards the full model on the frozen (adapted) backbone;
6. ``exits``: init (the distilled exits, or at ``distill.tokens: 0`` the weighted loss over exit
   points), then ConsistentEE rounds (REINFORCE policy + Eq. 6 exit-norm step), in a nested run
   ``train``;
7. ``evaluate``: one nested run per criterion (static, CALM softmax / saturation, policy), each
   sweeping its thresholds on dev and test prompts;
8. ``report`` (``report-<adapt>`` on an adapted decoder): ROUGE-L vs speed-up curves, the table at
   ``generate.speedups`` with the claim check, and example responses (MLflow artifacts).

Measured tokens/s come from ``benchmarks/bench_generation.py``, not from this flow.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import flow

from flows.context import RunContext, start_flow
from flows.tracking import active_logger, describe, log_curve
from models.generation import GenerationError
from tasks.caching import run_cached
from tasks.metric_schema import NOT_APPLICABLE, front_readings, operating_metrics
from tasks.generation import EXIT_SETS, evaluate_criterion, full_depth_responses, train_exits
from tasks.generation_distill import adapt_backbone, build_distillation_data, check_adaptation_inputs, distill_exits
from tasks.prompts import build_prompts
from tasks.reports.generation import operating_point, report_generation
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


def distil_and_adapt(ctx: RunContext, responses_dir: Path) -> tuple[Path | None, Path | None, dict]:
    """Steps 3-5 (cached, nested run ``distill``): distillation data, the adaptation when
    ``generate.adapt`` is not ``none``, the exits distilled on top. Returns ``(adapted folder or
    None, distilled exits folder or None, {name: report file})``; nothing at ``distill.tokens: 0``."""
    cfg, base = ctx.params.generate, ctx.layout.generate
    if not cfg.distill.tokens:
        return None, None, {}
    conll = ctx.params.path(cfg.distill.conll_dir) if cfg.distill.conll_dir is not None else None
    reports, adapted_dir = {}, None
    with mlflow.start_run(run_name="distill", nested=True):
        mlflow.log_params({"distill_tokens": cfg.distill.tokens, "distill_top_k": cfg.distill.top_k, "adapt": cfg.adapt})
        check_adaptation_inputs(cfg.decoder, cfg.adapt, cfg.adaptation)  # before the teacher runs
        data = run_cached(build_distillation_data, out_dir=base / "distill-data", decoding=cfg.decoding, distill=cfg.distill,
                          responses_dir=responses_dir, data_dir=ctx.layout.data, conll_dir=conll, seed=ctx.params.seed,
                          policy_held_out=cfg.policy.held_out)
        data_dir = Path(data["meta"]).parent
        if cfg.adapt != "none":
            adapted = run_cached(adapt_backbone, out_dir=base / f"adapt-{cfg.adapt}", decoding=cfg.decoding,
                                 exit_config=cfg.exit_config, adapt=cfg.adapt, adaptation=cfg.adaptation, distill_dir=data_dir,
                                 responses_dir=responses_dir, seed=ctx.params.seed, logger=active_logger())
            adapted_dir, reports["adaptation"] = Path(adapted["adapted"]), adapted["report"]
        distilled = run_cached(distill_exits, out_dir=base / ("distill" if adapted_dir is None else f"distill-{cfg.adapt}"),
                               decoding=cfg.decoding, exit_config=cfg.exit_config, distill=cfg.distill, distill_dir=data_dir,
                               adapted_dir=adapted_dir, seed=ctx.params.seed, logger=active_logger())
        reports["distillation"] = distilled["report"]
        for path in reports.values():
            mlflow.log_artifact(path, "distill")
    return adapted_dir, Path(distilled["exits"]), reports


def evaluate_criteria(ctx: RunContext, trained: dict, responses_dir: Path,
                      adapted_dir: Path | None = None) -> tuple[dict, str]:
    """Step 4: every criterion in its nested run (cached); ``(curve file per criterion, examples file)``."""
    cfg, base = ctx.params.generate, ctx.layout.generate
    curves, examples = {}, None
    evaluate_folder = "evaluate" if adapted_dir is None else f"evaluate-{cfg.adapt}"
    for criterion in cfg.criteria:
        exits_dir = Path(trained[EXIT_SETS.get(criterion, "init")])
        with mlflow.start_run(run_name=criterion, nested=True):
            mlflow.log_params({"criterion": criterion, "thresholds": cfg.criteria[criterion], "exits": exits_dir.name})
            evaluated = run_cached(evaluate_criterion, out_dir=base / evaluate_folder / criterion, decoding=cfg.decoding,
                                   criterion=criterion, thresholds=cfg.criteria[criterion], example_count=cfg.examples,
                                   responses_dir=responses_dir, exits_dir=exits_dir, logger=active_logger(),
                                   adapted_dir=adapted_dir)
            mlflow.log_artifact(evaluated["curve"], "generate")
            mlflow.log_artifact(evaluated["examples"], "generate")
            log_generation_curve(criterion, evaluated["curve"], cfg.rouge_target)
        curves[criterion] = evaluated["curve"]
        if criterion == "policy" or examples is None:
            examples = evaluated["examples"]
    return curves, examples


def log_generation_curve(criterion: str, curve_path, rouge_target: float) -> None:
    """A criterion's sweep in the schema (quality = ROUGE-L x 100): ``curve.json`` and the
    ``curve_*_quality`` step metrics by layer speed-up, ``test_quality_at_<t>x`` on the dev-chosen front,
    and the operating metrics (``dev_quality``, ``test_quality``, ``layer_speedup``, ``flops_speedup``) of
    the report's operating point: the fastest setting with dev ROUGE-L >= ``rouge_target`` (when none
    reaches it, the best on dev, as the classification flows choose; tag ``operating_rule`` says which)."""
    rows = json.loads(Path(curve_path).read_text())
    op = operating_point(rows, rouge_target)
    if op is not None:
        over = op["dev"]["rouge_l"] >= rouge_target
        mlflow.set_tag("operating_rule", f"fastest with dev ROUGE-L >= {rouge_target:g}" if over
                       else f"best dev ROUGE-L (none reaches {rouge_target:g})")
        mlflow.log_metrics(operating_metrics({"threshold": op["threshold"], **{
            split: {"quality": 100 * op[split]["rouge_l"], "layer_speedup": op[split]["layer_speedup"],
                    "flops_speedup": op[split]["flops_speedup"]} for split in ("dev", "test")}}))
        mlflow.log_param("threshold", op["threshold"])
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


def report_folder(adapt: str) -> str:
    """``report`` for the original decoder, ``report-<adapt>`` for an adapted one (as ``exits-<adapt>``,
    ``evaluate-<adapt>``), so the two runs' reports sit side by side for the benchmark."""
    return "report" if adapt == "none" else f"report-{adapt}"


def check_generate_inputs(ctx: RunContext) -> None:
    """Prepared prompt sources; with distillation, its sources and the CoNLL folder."""
    cfg = ctx.params.generate
    ctx.check_prepared(cfg.prompts.sources, "generate.prompts.sources")
    if cfg.distill.tokens:
        ctx.check_prepared(cfg.distill.sources, "generate.distill.sources")
        if cfg.distill.conll_dir is not None and not (ctx.params.path(cfg.distill.conll_dir) / "train.txt").is_file():
            raise GenerationError(f"generate.distill.conll_dir: {ctx.params.path(cfg.distill.conll_dir)}/train.txt not found; "
                                  f"point it at the CoNLL-2003 folder or set it to null")
    elif cfg.adapt != "none":
        raise GenerationError(f"generate.adapt {cfg.adapt} trains on the distillation set, but generate.distill.tokens is 0; "
                              f"give it tokens (e.g. 100000) or set generate.adapt: none")


@flow(name="generate", log_prints=True)
def generate_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Prompts -> full-depth responses -> exits -> every criterion -> report (one parent MLflow run)."""
    ctx = start_flow(params_path, overrides, "exitflow-generate", check=check_generate_inputs)
    cfg, base = ctx.params.generate, ctx.layout.generate
    with ctx.parent_run("generate", SECTIONS, method="generation"):
        responses_dir = prompts_and_responses(ctx)
        adapted_dir, distilled_exits, distill_reports = distil_and_adapt(ctx, responses_dir)
        with mlflow.start_run(run_name="train", nested=True):
            trained = run_cached(train_exits, out_dir=base / ("exits" if adapted_dir is None else f"exits-{cfg.adapt}"),
                                 decoding=cfg.decoding, exit_config=cfg.exit_config, init=cfg.init, policy=cfg.policy,
                                 responses_dir=responses_dir, seed=ctx.params.seed, logger=active_logger(),
                                 init_exits_dir=distilled_exits, adapted_dir=adapted_dir)
            mlflow.log_artifact(trained["history"], "exits")
        curves, examples = evaluate_criteria(ctx, trained, responses_dir, adapted_dir)
        report = report_generation(curves, examples, cfg.speedups, cfg.rouge_target, base / report_folder(cfg.adapt),
                                   f"{cfg.decoder}: ROUGE-L vs speed-up (test prompts)", distill_reports)
        for key in ("plot", "report", "examples", "summary"):
            mlflow.log_artifact(report[key], "generate")
        if report["claim_holds"] is not None:
            mlflow.set_tag("claim_holds", str(report["claim_holds"]).lower())
    if not overrides:  # dvc.lock describes params.yaml as written
        record_pipeline_outputs(ctx.params.root, ["generate"])
    print(report["table"])
    return report
