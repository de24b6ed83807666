"""HashEE (Sun et al. 2022): tokens exit at layers fixed by a hash table."""

from flows.registry import Command, Method, register

register(Method(
    name="hashee", order=20, summary="HashEE: tokens exit at layers fixed by a hash table (Sun et al. 2022)",
    flows_module="flows.hashee", model_module="models.hashee", config_section="hashee", cell="hashee_cell",
    commands=(
        Command("hashee", "hashee_pipeline",
                "HashEE with the configured hash (hashee.kind, default frequency, B = hashee.buckets): build the "
                "table, fine-tune with token-level exits, evaluate vs the full model "
                "(artifacts/<task>/seed-<seed>/hashee/default/)."),
        Command("hashee-study", "hashee_study",
                "Train and compare every hash function (hashee.study_kinds) and a (layers, buckets) grid "
                "(hashee.study_grid) on train.task; one table and plot in MLflow (experiment exitflow-hashee-study)."),
    ),
    stages=("hashee",)))
