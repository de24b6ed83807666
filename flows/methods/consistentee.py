"""ConsistentEE (Zeng et al. 2024): a policy network per layer trained by REINFORCE with the
memorized-layer hardness reward, iterated with the classifier."""

from flows.registry import Command, Method, register

register(Method(
    name="consistentee", order=30,
    summary="ConsistentEE: a policy network per layer trained by REINFORCE with the memorized-layer hardness "
            "reward (Zeng et al. 2024)",
    flows_module="flows.consistentee", model_module="models.consistentee", config_section="consistentee",
    cell="consistentee_cell",
    commands=(
        Command("consistentee", "consistentee_pipeline",
                "ConsistentEE: weighted init, then up to consistentee.rounds rounds of memorized layer -> policy "
                "step (REINFORCE) -> heads step; Spearman table; evaluation vs entropy/patience/LTE "
                "(artifacts/<task>/seed-<seed>/consistentee/; MLflow experiment exitflow-consistentee). "
                "Resumes from the last finished round."),
        Command("consistentee-ablation", "consistentee_ablation",
                "Vanilla vs hardness-guided reward over consistentee.ablation_alphas (paper Figure 4): one plot of "
                "test quality vs layer speed-up at tau (MLflow experiment exitflow-consistentee-ablation)."),
    ),
    stages=("consistentee",)))
