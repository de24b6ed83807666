"""The instance-difficulty learnability studies (HashEE paper, section 2)."""

from flows.registry import Command, Method, register

register(Method(
    name="learnability", order=70,
    summary="can instance difficulty be learned? (HashEE paper, section 2)",
    flows_module="flows.learnability", model_module="models.learnability", config_section="learnability",
    commands=(Command(
        "learnability", "learnability",
        "Can instance difficulty be learned? Builds the difficulty datasets (published snli_model, train.task dev "
        "annotated by the joint model, CoNLL-2003 dev annotated by a multi-exit tagger), trains Majority / "
        "Linear-M / Linear-B / BiLSTM / BERT predictors, runs the human-difficulty classifier; table and F1 chart "
        "in MLflow experiment `learnability` (artifacts/<task>/seed-<seed>/learnability/, and "
        "artifacts/learnability/seed-<seed>/ for the studies that do not read train.task)."),),
    stages=("learnability",)))
