"""Multi-exit training strategies (joint, weighted, two-stage, BERxiT alternating) with the
classic criteria and BERxiT's learning-to-exit module: the default run's models."""

import typer

from flows.registry import Command, Method, Option, register

register(Method(
    name="berxit", order=10,
    summary="multi-exit training (joint, weighted, two-stage, BERxiT alternating) with the classic criteria "
            "and BERxiT's learning-to-exit module (Xin et al. 2021)",
    flows_module="flows.pipeline", model_module="models.berxit", config_section="train",
    cell="strategy_cell", variants="strategy_variants",
    commands=(
        Command("train", "train_command",
                "Train a multi-exit model with one objective (artifacts/<task>/seed-<seed>/train/<strategy>/); "
                "resumes if interrupted.",
                (Option("strategy", str, typer.Option(..., help="joint | weighted | two_stage | alternating")),)),
        Command("evaluate", "evaluate_command",
                "Sweep every exit criterion, pick dev operating points, time real early exit "
                "(artifacts/<task>/seed-<seed>/evaluate/<strategy>/).",
                (Option("strategy", str, typer.Option(..., help="which trained strategy to evaluate")),)),
    ),
    stages=("train", "evaluate", "report")))
