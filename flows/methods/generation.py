"""Early exit in generation on a decoder LLM: ConsistentEE's policy against CALM's criteria."""

from flows.registry import Command, Method, register

register(Method(
    name="generation", order=60,
    summary="early exit in generation on a decoder LLM: ConsistentEE's policy against CALM",
    flows_module="flows.generation", model_module="models.generation", config_section="generate",
    commands=(Command(
        "generate", "generate_pipeline",
        "Early exit in generation on a decoder LLM (generate.decoder, default the packaged SmolLM2-135M-Instruct "
        "GGUF): templated prompts -> the model's own full-depth greedy responses -> distillation set (100k "
        "teacher-forced tokens, the full model's top-32 distribution) -> optional backbone adaptation (generate.adapt: "
        "lora | full; layer dropout + early-exit loss) -> exits distilled towards the full model -> ConsistentEE policy (REINFORCE) -> ROUGE-L vs speed-up of static, CALM softmax / "
        "saturation and policy exits with state copying (artifacts/generate/seed-<seed>/; MLflow experiment "
        "exitflow-generate). Finished steps are reused. Timing: benchmarks/bench_generation.py."),),
    stages=("generate",)))
