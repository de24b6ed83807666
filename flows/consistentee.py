"""ConsistentEE flows: iterative RL training (paper Algorithm, "iterative training") and the
reward ablation (paper Figure 4).

``run_consistentee`` reads like the method: initialise with the ``weighted`` objective (with
training dynamics for forgetting events) -> for each round: memorized layer -> policy step ->
heads step, stop when the dev trade-off stops improving -> hardness analysis (Table 1) ->
evaluation of the best round with the spine's criteria next to the policy -> comparison report.

Every step is a cached task with its own artifact folder (``flows/layout.py``), so an
interrupted run resumes from the last finished round.
"""

from __future__ import annotations

import mlflow
from prefect import flow

from flows.layout import Layout, common, prepare_task_data
from flows.methods import evaluate_cell, register_method
from flows.tracking import active_logger, log_strategy, nested_run, parent_run, use_experiment
from tasks.caching import run_cached
from tasks.config import ConsistenteeConfig, Params, load_params
from tasks.consistentee import compute_memorized_layer, consistentee_round, hardness_analysis
from tasks.evaluate import evaluate_exits
from tasks.reports.consistentee import ablation_report, consistentee_report
from tasks.tracking import MlflowLogger
from tasks.train import train_multi_exit

INIT_OBJECTIVE = "weighted"


def consistentee_train_config(params: Params):
    """The spine's training config with ConsistentEE's policy networks as the exit scorer
    (untrained at init: the weighted objective adds no term for them)."""
    return params.train.model_copy(update={"exit_scorer": "policy"})


def consistentee_criteria(params: Params) -> list[str]:
    """The spine's criteria but LTE (ConsistentEE's exit scorer is its policy), then the policy."""
    return [c for c in params.evaluate.criteria if c != "lte"] + ["policy"]


def train_rounds(params: Params, cfg: ConsistenteeConfig, tag: str, rounds: int) -> dict:
    """Init (cached, shared) then up to ``rounds`` rounds, each a nested MLflow run.

    Returns ``{"checkpoint": best round's checkpoint, "best_round", "rounds": [round results], "dirs"}``
    (``dirs``: the run's ``ConsistenteeDirs``).
    """
    dirs = Layout.from_params(params).consistentee(tag)
    shared = common(params)
    train = consistentee_train_config(params)
    run_cached(train_multi_exit, out_dir=dirs.init, train=train, backbone=params.backbone, strategy=INIT_OBJECTIVE,
               dynamics_evals_per_epoch=cfg.forgetting_evals_per_epoch, **shared)
    done = 0  # rounds an earlier (interrupted) run finished; run_cached reuses them while their inputs match
    while done < rounds and (dirs.train(done + 1) / "result.json").exists():
        done += 1
    if done:
        print(f"[consistentee {tag}] resuming after round {done}: {f'rounds 1-{done}' if done > 1 else 'round 1'} "
              f"finished earlier (outputs in {dirs.rounds}), reused while their inputs are unchanged")
    ckpt, best, best_round, results = dirs.init / "checkpoint", None, 0, []
    for r in range(1, rounds + 1):
        with nested_run(f"{tag}/round-{r}") as tracked:
            memorized = run_cached(compute_memorized_layer, out_dir=dirs.memorized(r), train=train,
                                   backbone=params.backbone, ckpt_dir=ckpt, tolerance=cfg.regression_tolerance,
                                   title=f"(round {r} input)", **shared)
            if tracked:
                mlflow.log_params({"round": r, "reward": cfg.reward, "alpha": cfg.alpha})
                mlflow.log_artifact(memorized["plot"], "memorized_layer")
                for k, count in enumerate(memorized["histogram"], start=1):
                    mlflow.log_metric("memorized_layer_count", count, step=k)
                mlflow.log_metric("memorized_layer_mean", memorized["mean"])
            result = run_cached(consistentee_round, out_dir=dirs.train(r), consistentee=cfg, train=train,
                                backbone=params.backbone, ckpt_dir=ckpt, memorized_dir=dirs.memorized(r),
                                round_index=r, logger=active_logger(), **shared)
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
            break
    return {"checkpoint": ckpt, "best_round": best_round, "rounds": results, "dirs": dirs}


def run_consistentee(params: Params, tag: str = "default", baselines: dict | None = None) -> dict:
    """The whole method inside the active MLflow run: rounds, Table 1, evaluation, report."""
    cfg = params.consistentee
    shared = common(params)
    mlflow.log_params({"reward": cfg.reward, "alpha": cfg.alpha, "copies": cfg.copies, "tau": cfg.tau,
                       "max_rounds": cfg.rounds})
    trained = train_rounds(params, cfg, tag, cfg.rounds)
    dirs = trained["dirs"]
    mlflow.log_metric("best_round", trained["best_round"])
    if (dirs.init / "train_dynamics.pt").exists():
        hardness = run_cached(hardness_analysis, out_dir=dirs.hardness, dynamics_path=dirs.init / "train_dynamics.pt",
                              memorized_dir=dirs.memorized(1), tolerance=cfg.regression_tolerance)
        mlflow.log_metrics({k: v for k, v in hardness["table"].items() if isinstance(v, float)})
        mlflow.log_artifact(hardness["markdown"], "hardness")
        mlflow.log_table({k: [v] for k, v in hardness["table"].items()}, "hardness/spearman.json")
    criteria = consistentee_criteria(params)
    evaluated = run_cached(evaluate_exits, out_dir=dirs.evaluate, evaluate=params.evaluate.model_copy(update={"criteria": criteria}),
                           backbone=params.backbone, train=consistentee_train_config(params), ckpt_dir=trained["checkpoint"],
                           logger=MlflowLogger(mlflow.active_run().info.run_id), fixed_thresholds={"policy": cfg.tau}, **shared)
    log_strategy(params, f"consistentee-{tag}", {"checkpoint": str(trained["checkpoint"])}, evaluated, register=False)
    report = consistentee_report(dirs.evaluate, baselines or {}, dirs.report, tau=cfg.tau)
    mlflow.log_artifact(report["plot"], "report")
    mlflow.log_text(report["table"], "report/results.md")
    return {"report": report, "evaluated": evaluated["summary"], "best_round": trained["best_round"]}


@register_method("consistentee")
def consistentee_cell(params: Params) -> dict:
    """ConsistentEE (weighted init, up to ``consistentee.rounds`` rounds): the policy's tau sweep
    and the spine's criteria on the final model (evaluated as ``run_consistentee`` does)."""
    cfg = params.consistentee
    trained = train_rounds(params, cfg, "compare", cfg.rounds)
    criteria = consistentee_criteria(params)
    return evaluate_cell(params, trained["checkpoint"], trained["dirs"].evaluate, consistentee_train_config(params),
                         criteria, fixed_thresholds={"policy": cfg.tau})


def spine_baselines(params: Params) -> dict:
    """The spine's evaluation folders (joint, alternating, ...) that exist, for the comparison."""
    layout = Layout.from_params(params)
    return {s: layout.evaluate(s) for s in params.train.strategies}


@flow(name="consistentee", log_prints=True)
def consistentee_pipeline(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """ConsistentEE with the configured reward (default: hardness-guided), compared with the spine's criteria."""
    params = load_params(params_path, overrides or [])
    use_experiment(params, "exitflow-consistentee")
    with parent_run(params, f"consistentee-{params.consistentee.name}", ("seed", "backbone", "train", "consistentee")):
        prepare_task_data(params)
        out = run_consistentee(params, "default", spine_baselines(params))
    print(out["report"]["table"])
    return out


@flow(name="consistentee_ablation", log_prints=True)
def consistentee_ablation(params_path: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Paper Figure 4: vanilla vs hardness-guided reward over ``consistentee.ablation_alphas``
    (``ablation_rounds`` rounds each, from the shared init); test quality vs layer speed-up at tau."""
    params = load_params(params_path, overrides or [])
    base = params.consistentee
    shared = common(params)
    use_experiment(params, "exitflow-consistentee-ablation")
    points: dict[str, list[dict]] = {"vanilla": [], "hardness": []}
    full = None
    with parent_run(params, f"consistentee-ablation-{params.train.task}", ("seed", "backbone", "train", "consistentee")):
        prepare_task_data(params)
        for reward in points:
            for alpha in base.ablation_alphas:
                cfg = base.model_copy(update={"reward": reward, "alpha": alpha, "rounds": base.ablation_rounds})
                tag = f"ablation/{cfg.name}"
                with mlflow.start_run(run_name=cfg.name, nested=True):
                    trained = train_rounds(params, cfg, tag, cfg.rounds)
                    evaluate = params.evaluate.model_copy(update={"criteria": ["policy"], "timing_batch_sizes": []})
                    evaluated = run_cached(evaluate_exits, out_dir=trained["dirs"].evaluate, evaluate=evaluate,
                                           backbone=params.backbone, train=consistentee_train_config(params),
                                           ckpt_dir=trained["checkpoint"], fixed_thresholds={"policy": cfg.tau}, **shared)
                    at_tau = evaluated["summary"]["fixed_points"]["policy"]["test"]
                    mlflow.log_metrics({"test_quality": at_tau["quality"], "test_layer_speedup": at_tau["layer_speedup"]})
                    full = evaluated["summary"]["full"]["test_quality"]
                points[reward].append({"alpha": alpha, "quality": at_tau["quality"], "layer_speedup": at_tau["layer_speedup"]})
        out_dir = Layout.from_params(params).consistentee_ablation
        report = ablation_report(points, full, out_dir)
        mlflow.log_artifact(report["plot"], "ablation")
        mlflow.log_text(report["table"], "ablation/results.md")
    print(report["table"])
    return report
