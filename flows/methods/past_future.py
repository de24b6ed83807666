"""Global Past-Future (Liao et al. 2021): exits over all past layers and imitated future layers."""

from typing import Optional

import typer

from flows.registry import Command, Method, Option, register

register(Method(
    name="past-future", order=40,
    summary="Global Past-Future: exits over all past layers and imitated future layers (Liao et al. 2021)",
    flows_module="flows.past_future", model_module="models.past_future", config_section="past_future",
    cell="past_future_cell",
    commands=(Command(
        "past-future", "past_future_command",
        "Global Past-Future: each past strategy (past_future.strategies) without and with the imitated future, "
        "the naive vote / ensemble and local joint / weighted exits with train's budget; a table at "
        "past_future.speedups (chosen on dev, reported on test), a plot and the claim check "
        "(artifacts/<task>/seed-<seed>/past_future/; MLflow experiment exitflow-past-future). "
        "Finished models are reused.",
        (Option("task", Optional[list[str]],
                typer.Option(None, "--task", help="only these tasks (default: past_future.tasks)")),
         Option("default_run", bool,
                typer.Option(False, "--default-run", help="only the model `exitflow run` adds: "
                             "past_future.in_default_run with the future on train.task "
                             "(artifacts/.../past_future/default/)")))),),
    stages=("past_future", "past_future_default")))
