"""LECO (Zhang et al. 2023): exit architectures found by differentiable search, and
comparison-based exiting (COBEE)."""

from typing import Optional

import typer

from flows.registry import Command, Method, Option, register

register(Method(
    name="leco", order=50,
    summary="LECO: exit architectures found by differentiable search, and comparison-based exiting, COBEE "
            "(Zhang et al. 2023)",
    flows_module="flows.leco", model_module="models.leco", config_section="leco", cell="leco_cell",
    regression=False,  # COBEE needs classes (models/leco.py)
    commands=(Command(
        "leco", "leco_command",
        "LECO: search one exit architecture per layer (first-order DARTS over leco.search_space, "
        "leco.search_epochs), derive it (argmax per choice, null included: leco/derive/architecture.json), "
        "retrain the derived exits from the pretrained backbone with train's budget, then compare: AVG / BEST "
        "layer-wise test scores against leco.baselines, and COBEE against entropy, patience and LTE at "
        "leco.speedups (artifacts/<task>/seed-<seed>/leco/; MLflow experiment exitflow-leco). "
        "Finished steps are reused.",
        (Option("task", Optional[list[str]], typer.Option(None, "--task", help="only these tasks (default: leco.tasks)")),
         Option("until", str, typer.Option("compare", "--until", help="the last step to run: search | derive | train | "
                                                                      "compare (earlier steps are reused)")))),),
    stages=("leco_search", "leco_derive", "leco_train", "leco_compare")))
