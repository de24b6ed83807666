"""ConsistentEE flows: iterative RL training (paper Algorithm, "iterative training") and the
reward ablation (paper Figure 4).

``run_consistentee`` reads like the method: initialise with the ``weighted`` objective (with
training dynamics for forgetting events) -> for each round: memorized layer -> policy step ->
heads step, stop when the dev trade-off stops improving -> hardness analysis (Table 1) ->
evaluation of the best round with the strategy models' criteria next to the policy -> comparison report.

Every step is a cached task with its own artifact folder (``flows/layout.py``), so an
interrupted run resumes from the last finished round.
"""

from __future__ import annotations

import mlflow
from prefect import flow

from flows.context import RunContext, start_flow
from flows.layout import TrainedDirs
from flows.steps import ExitModel, evaluate_cell, evaluate_exit_model, train_exit_model
from flows.tracking import active_logger, describe, log_exit_run, nested_run
from tasks.caching import run_cached
from config.params import ConsistenteeConfig, TrainConfig
from tasks.consistentee import compute_memorized_layer, consistentee_round, hardness_analysis
from tasks.reports.consistentee import ablation_report, consistentee_report

INIT_OBJECTIVE = "weighted"
SECTIONS = ("seed", "backbone", "train", "consistentee")


def consistentee_train_config(ctx: RunContext) -> TrainConfig:
    """``train`` with ConsistentEE's policy networks as the exit scorer (untrained at init: the
    weighted objective adds no term for them)."""
    return ctx.params.train.model_copy(update={"exit_scorer": "policy"})


def consistentee_criteria(ctx: RunContext) -> list[str]:
    """``evaluate.criteria`` but LTE (ConsistentEE's exit scorer is its policy), then the policy."""
    return [c for c in ctx.params.evaluate.criteria if c != "lte"] + ["policy"]


def log_round(r: int, cfg: ConsistenteeConfig, memorized: dict) -> None:
    """Round ``r``'s settings and memorized-layer distribution (per-layer shares and a table), in its nested run."""
    mlflow.log_params({"method": "consistentee", "round": r, "reward": cfg.reward, "alpha": cfg.alpha})
    mlflow.log_artifact(memorized["plot"], "memorized_layer")
    counts = memorized["histogram"]
    total = sum(counts) or 1
    mlflow.log_metrics({f"memorized_layer_share_layer_{k}": c / total for k, c in enumerate(counts, start=1)})
    mlflow.log_table({"layer": list(range(1, len(counts) + 1)), "instances": list(counts),
                      "share": [c / total for c in counts]}, "memorized_layer.json")
    mlflow.log_metric("memorized_layer_mean", memorized["mean"])
    describe(f"ConsistentEE round {r} ({cfg.reward} reward, alpha {cfg.alpha}): the memorized-layer distribution of "
             "its input model (`memorized_layer_share_layer_<k>`, table `memorized_layer.json`) and the round's "
             "policy/heads training. The parent run has the per-round series, `best_round` and `stop_reason`.")


def finished_rounds(dirs, rounds: int, tag: str) -> int:
    """Rounds an earlier (interrupted) run finished; ``run_cached`` reuses them while their inputs match."""
    done = 0
    while done < rounds and (dirs.train(done + 1) / "result.json").exists():
        done += 1
    if done:
        print(f"[consistentee {tag}] resuming after round {done}: {f'rounds 1-{done}' if done > 1 else 'round 1'} "
              f"finished earlier (outputs in {dirs.rounds}), reused while their inputs are unchanged")
    return done


def train_rounds(ctx: RunContext, cfg: ConsistenteeConfig, tag: str, rounds: int) -> dict:
    """Init (cached, shared) then up to ``rounds`` rounds, each a nested MLflow run.

    Returns ``{"checkpoint": best round's checkpoint, "best_round", "rounds": [round results], "dirs"}``
    (``dirs``: the run's ``ConsistenteeDirs``).
    """
    dirs, inputs = ctx.layout.consistentee(tag), ctx.inputs.kwargs()
    train = consistentee_train_config(ctx)
    train_exit_model(ctx, train, INIT_OBJECTIVE, dirs.init, dynamics_evals_per_epoch=cfg.forgetting_evals_per_epoch)
    finished_rounds(dirs, rounds, tag)
    ckpt, best, best_round, results = dirs.init / "checkpoint", None, 0, []
    stop_reason = f"max_rounds ({rounds}) reached"
    for r in range(1, rounds + 1):
        with nested_run(f"consistentee-{cfg.name}/round-{r}") as tracked:
            memorized = run_cached(compute_memorized_layer, out_dir=dirs.memorized(r), train=train,
                                   backbone=ctx.params.backbone, ckpt_dir=ckpt, tolerance=cfg.regression_tolerance,
                                   title=f"(round {r} input)", **inputs)
            if tracked:
                log_round(r, cfg, memorized)
            result = run_cached(consistentee_round, out_dir=dirs.train(r), consistentee=cfg, train=train,
                                backbone=ctx.params.backbone, ckpt_dir=ckpt, memorized_dir=dirs.memorized(r),
                                round_index=r, logger=active_logger(), **inputs)
        results.append(result)
        # round 1 always counts (the init model's policy is untrained); later rounds must beat the best so far
        improved = best is None or result["dev"]["objective"] > best
        print(f"[consistentee {tag}] round {r}: dev quality {result['dev']['quality']:.2f}, layer speed-up "
              f"{result['dev']['layer_speedup']:.2f}x, objective {result['dev']['objective']:.4f} "
              f"({'improved' if improved else 'not improved'})")
        if improved or not cfg.early_stop:
            best = result["dev"]["objective"] if best is None else max(best, result["dev"]["objective"])
            best_round, ckpt = r, dirs.train(r) / "checkpoint"
        if not improved and cfg.early_stop:
            stop_reason = (f"early stop after round {r}: its dev objective {result['dev']['objective']:.4f} did not beat "
                           f"round {best_round}'s {best:.4f}")
            break
    return {"checkpoint": ckpt, "best_round": best_round, "rounds": results, "dirs": dirs, "stop_reason": stop_reason}


def log_rounds(trained: dict, cfg: ConsistenteeConfig) -> None:
    """On the active (ConsistentEE) run: the per-round dev series (step = round), ``best_round``,
    ``rounds_run``, ``max_rounds`` and the ``stop_reason`` tag."""
    for r, result in enumerate(trained["rounds"], start=1):
        mlflow.log_metrics({f"round_dev_{k}": result["dev"][k] for k in ("objective", "quality", "layer_speedup")
                            if k in result["dev"]}, step=r)
    mlflow.log_metrics({"best_round": trained["best_round"], "rounds_run": len(trained["rounds"])})
    mlflow.set_tag("stop_reason", trained["stop_reason"])


def consistentee_model(ctx: RunContext, dirs, tau: float, **evaluate_updates) -> ExitModel:
    """The trained rounds' model as evaluated: ``consistentee_criteria`` with the policy also at ``tau``."""
    evaluate = ctx.params.evaluate.model_copy(update={"criteria": consistentee_criteria(ctx), **evaluate_updates})
    return ExitModel(consistentee_train_config(ctx), INIT_OBJECTIVE, TrainedDirs(dirs.rounds, dirs.evaluate), evaluate,
                     fixed_thresholds={"policy": tau})


def log_hardness(ctx: RunContext, cfg: ConsistenteeConfig, dirs) -> None:
    """Paper Table 1 (Spearman of memorized layer vs forgetting events), logged to the active run."""
    hardness = run_cached(hardness_analysis, out_dir=dirs.hardness, dynamics_path=dirs.init / "train_dynamics.pt",
                          memorized_dir=dirs.memorized(1), tolerance=cfg.regression_tolerance)
    mlflow.log_metrics({k: v for k, v in hardness["table"].items() if isinstance(v, float)})
    mlflow.log_artifact(hardness["markdown"], "hardness")
    mlflow.log_table({k: [v] for k, v in hardness["table"].items()}, "hardness/spearman.json")


def run_consistentee(ctx: RunContext, tag: str = "default", baselines: dict | None = None) -> dict:
    """The whole method inside the active MLflow run: rounds, Table 1, evaluation, report."""
    cfg = ctx.params.consistentee
    mlflow.log_params({"reward": cfg.reward, "alpha": cfg.alpha, "copies": cfg.copies, "tau": cfg.tau,
                       "max_rounds": cfg.rounds})
    trained = train_rounds(ctx, cfg, tag, cfg.rounds)
    dirs = trained["dirs"]
    log_rounds(trained, cfg)
    if (dirs.init / "train_dynamics.pt").exists():
        log_hardness(ctx, cfg, dirs)
    evaluated = evaluate_exit_model(ctx, consistentee_model(ctx, dirs, cfg.tau), trained["checkpoint"], active_logger())
    log_exit_run(ctx.params, f"consistentee-{cfg.name}", {"checkpoint": str(trained["checkpoint"])}, evaluated,
                 register=False, method="consistentee")
    describe(f"ConsistentEE `{cfg.name}`: {len(trained['rounds'])} of max_rounds {cfg.rounds} rounds ran; "
             f"round {trained['best_round']} is evaluated. Why it stopped: {trained['stop_reason']} (tag `stop_reason`). "
             "Per-round dev numbers: chart `round_dev_objective`, `round_dev_quality`, `round_dev_layer_speedup` "
             "against Step (= round). The nested runs `.../round-<r>` hold each round's memorized-layer "
             "distribution; the criterion runs `.../<criterion>` the operating points and curves.")
    report = consistentee_report(dirs.evaluate, baselines or {}, dirs.report, tau=cfg.tau)
    mlflow.log_artifact(report["plot"], "report")
    mlflow.log_text(report["table"], "report/results.md")
    return {"report": report, "evaluated": evaluated["summary"], "best_round": trained["best_round"]}


def consistentee_cell(ctx: RunContext, variant: str) -> dict:
    """ConsistentEE (weighted init, up to ``consistentee.rounds`` rounds): the policy's tau sweep
    and the ``evaluate`` criteria on the final model (evaluated as ``run_consistentee`` does)."""
    cfg = ctx.params.consistentee
    trained = train_rounds(ctx, cfg, "compare", cfg.rounds)
    batch_size = ctx.params.compare.timing_batch_size
    model = consistentee_model(ctx, trained["dirs"], cfg.tau, timing_batch_sizes=[batch_size])
    return evaluate_cell(ctx, model, trained["checkpoint"])


def strategy_baselines(ctx: RunContext) -> dict:
    """The default run's strategy evaluation folders (joint, alternating, ...), for the comparison."""
    return {s: ctx.layout.evaluate(s) for s in ctx.params.train.strategies}


@flow(name="consistentee", log_prints=True)
def consistentee_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """ConsistentEE with the configured reward (default: hardness-guided), compared with the strategies' criteria."""
    ctx = start_flow(params_path, overrides, "exitflow-consistentee")
    with ctx.parent_run(f"consistentee-{ctx.params.consistentee.name}", SECTIONS, method="consistentee"):
        out = run_consistentee(ctx, "default", strategy_baselines(ctx))
    print(out["report"]["table"])
    return out


def ablation_point(ctx: RunContext, cfg: ConsistenteeConfig) -> tuple[dict, float]:
    """One ablation setting's rounds, evaluated with the policy at tau: ``(point at tau on test, full test quality)``."""
    trained = train_rounds(ctx, cfg, f"ablation/{cfg.name}", cfg.rounds)
    model = consistentee_model(ctx, trained["dirs"], cfg.tau, criteria=["policy"], timing_batch_sizes=[])
    evaluated = evaluate_exit_model(ctx, model, trained["checkpoint"])
    at_tau = evaluated["summary"]["fixed_points"]["policy"]["test"]
    mlflow.log_params({"method": "consistentee", "criterion": "policy", "threshold": cfg.tau})
    mlflow.log_metrics({"test_quality": at_tau["quality"], "layer_speedup": at_tau["layer_speedup"]})
    return at_tau, evaluated["summary"]["full"]["test_quality"]


@flow(name="consistentee_ablation", log_prints=True)
def consistentee_ablation(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Paper Figure 4: vanilla vs hardness-guided reward over ``consistentee.ablation_alphas``
    (``ablation_rounds`` rounds each, from the shared init); test quality vs layer speed-up at tau."""
    ctx = start_flow(params_path, overrides, "exitflow-consistentee-ablation")
    base = ctx.params.consistentee
    points: dict[str, list[dict]] = {"vanilla": [], "hardness": []}
    full = None
    with ctx.parent_run(f"consistentee-ablation-{ctx.params.train.task}", SECTIONS, method="consistentee"):
        for reward in points:
            for alpha in base.ablation_alphas:
                cfg = base.model_copy(update={"reward": reward, "alpha": alpha, "rounds": base.ablation_rounds})
                with mlflow.start_run(run_name=cfg.name, nested=True):
                    at_tau, full = ablation_point(ctx, cfg)
                points[reward].append({"alpha": alpha, "quality": at_tau["quality"], "layer_speedup": at_tau["layer_speedup"]})
        report = ablation_report(points, full, ctx.layout.consistentee_ablation)
        mlflow.log_artifact(report["plot"], "ablation")
        mlflow.log_text(report["table"], "ablation/results.md")
    print(report["table"])
    return report
