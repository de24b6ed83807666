"""``exitflow generate`` end to end on a tiny Llama-style decoder: files, MLflow runs, cache, bad input."""

import json

import pytest
import torch

from tests.flows.conftest import make_decoder

pytestmark = pytest.mark.integration


def tiny(project):
    decoder = make_decoder(project / "decoder")
    return [f"generate.decoder={decoder}", "generate.exit_layers=2", "generate.max_new_tokens=6", "generate.batch_size=3",
            "generate.prompts.sources=[sst2]", "generate.prompts.train=8", "generate.prompts.dev=4", "generate.prompts.test=4",
            "generate.init.epochs=1", "generate.init.batch_tokens=16", "generate.policy.rounds=1", "generate.policy.policy_epochs=1",
            "generate.criteria={static: [2, 4], softmax: [0.5, 1.01], saturation: [0.9], policy: [0.5]}",
            "generate.speedups=[1.5, 2.0]", "generate.examples=2", *TINY_DISTILL]


TINY_DISTILL = ["generate.distill.tokens=240", "generate.distill.held_out_tokens=60", "generate.distill.sources=[sst2]",
                "generate.distill.conll_dir=null", "generate.distill.max_length=24", "generate.distill.top_k=4",
                "generate.distill.batch_sequences=8"]


def front_rouge(static: list[dict]) -> float:
    """Test ROUGE-L at 1.5x of the static exits at layers 2 (2x) and 4 (1x) of 4, the front chosen on dev:
    the 2x point alone when dev scores it as high as full depth, else the line between the two."""
    dev = {r["threshold"]: r["rouge_l"] for r in static if r["split"] == "dev"}
    test = {r["threshold"]: r["rouge_l"] for r in static if r["split"] == "test"}
    return test[2] if dev[2] >= dev[4] else (test[2] + test[4]) / 2


def test_generate_flow_end_to_end(project, prefect_harness, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flows.generation import generate_pipeline
    from config.params import load_params
    from tasks.reports.generation import operating_point
    from tests.flows.mlflow_schema import check_criterion_runs, check_experiment

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = tiny(project)
    report = generate_pipeline(str(project / "params.yaml"), overrides)
    base = project / "artifacts/generate/seed-42"

    prompts = [json.loads(line) for line in (base / "prompts/train.jsonl").read_text().splitlines()]
    assert len(prompts) == 8 and all(p["source"] == "sst2" for p in prompts)
    responses = [json.loads(line) for line in (base / "responses/test.jsonl").read_text().splitlines()]
    assert len(responses) == 4 and all(1 <= len(r["response_ids"]) <= 6 for r in responses)

    history = json.loads((base / "exits/history.json").read_text())
    assert history["points"] == [2, 4] and len(history["rounds"]) == 1
    # responses are greedy: the last exit (the model itself) predicts every training target
    assert history["init_before_fit"]["point_accuracy"][-1] == 1.0
    assert history["init_before_held_out"]["point_accuracy"][-1] == 1.0
    init = json.loads((base / "exits/init/exits.json").read_text())
    assert init["points"] == [2, 4] and init["stage"] == "init" and history["init_from"] == "distilled"
    distilled = json.loads((base / "distill/report.json").read_text())
    assert distilled["points"] == [2, 4] and distilled["train_tokens"] > 0 and not distilled["adapted"]
    assert distilled["agreement_before"][-1] == distilled["agreement_after"][-1] == 1.0  # the full model is the teacher
    summary = json.loads((base / "report/summary.json").read_text())
    assert summary["distillation"]["agreement_after"] == distilled["agreement_after"] and "adaptation" not in summary
    assert "| exit layer | before | after |" in report["table"]

    static = json.loads((base / "evaluate/static/curve.json").read_text())
    full = [r for r in static if r["threshold"] == 4]
    assert {r["split"] for r in full} == {"dev", "test"}
    for r in full:  # static exit at L reproduces the full-depth responses exactly
        assert r["rouge_l"] == 1.0 and r["layer_speedup"] == 1.0 and r["flops_speedup"] == pytest.approx(1.0)
    at2 = [r for r in static if r["threshold"] == 2]
    assert {r["split"] for r in at2} == {"dev", "test"}  # the check below must not pass on no rows
    assert all(r["layer_speedup"] == 2.0 and r["flops_speedup"] > 1.0 for r in at2)
    softmax = json.loads((base / "evaluate/softmax/curve.json").read_text())
    # tau > 1 never fires: every token runs all layers and pays the LM head at both exit points
    never = next(r for r in softmax if r["threshold"] == 1.01 and r["split"] == "test")
    assert never["layer_speedup"] == 1.0 and never["rouge_l"] == 1.0 and never["flops_speedup"] < 1.0

    assert "Paper's claim on layer speedup (ConsistentEE policy above CALM past 2x" in report["table"]
    assert "Paper's claim on flops speedup" in report["table"]
    assert (base / "report/curves.png").stat().st_size > 0
    assert "| prompt | full depth | accelerated | ROUGE-L |" in (base / "report/examples.md").read_text()

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("exitflow-generate")
    runs = client.search_runs([experiment.experiment_id])
    names = {r.info.run_name for r in runs}
    assert {"generate", "train", "static", "softmax", "saturation", "policy"} <= names
    parent = next(r for r in runs if r.info.run_name == "generate")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "generate")}
    assert {"generate/curves.png", "generate/report.md", "generate/examples.md", "generate/summary.json"} <= artifacts
    policy_run = next(r for r in runs if r.info.run_name == "policy")
    assert policy_run.data.params["exits"] == "consistentee"
    assert "test_rouge_l" in policy_run.data.metrics
    # the schema: provenance and descriptions on every run; each criterion's sweep by speed-up, read at the targets
    check_experiment(client, project, "exitflow-generate")
    # every criterion run carries the shared operating keys, at the report's operating point (quality = ROUGE-L x 100)
    criterion_runs = check_criterion_runs(client, runs, keys=("dev_quality", "test_quality", "layer_speedup", "flops_speedup"))
    bar = load_params(project / "params.yaml", overrides).generate.rouge_target
    chosen = {name: operating_point(json.loads((base / f"evaluate/{name}/curve.json").read_text()), bar)
              for name in ("static", "softmax", "saturation", "policy")}
    assert {n for n, op in chosen.items() if op["dev"]["rouge_l"] >= bar} == set(summary["operating_points"])
    for run in criterion_runs:
        op = chosen[run.info.run_name]["test"] | {"threshold": chosen[run.info.run_name]["threshold"]}
        assert run.data.metrics["test_quality"] == pytest.approx(100 * op["rouge_l"])
        assert run.data.metrics["layer_speedup"] == pytest.approx(op["layer_speedup"])
        assert run.data.metrics["flops_speedup"] == pytest.approx(op["flops_speedup"])
        assert float(run.data.params["threshold"]) == op["threshold"]
    assert {r.info.run_name for r in criterion_runs} == {"static", "softmax", "saturation", "policy"}
    static_run = next(r for r in criterion_runs if r.info.run_name == "static")
    assert static_run.data.metrics["test_quality_at_1.5x"] == pytest.approx(
        100 * front_rouge(static))

    # a second run is served from the cache: nothing is rewritten
    stamp = (base / "exits/init/exits.safetensors").stat().st_mtime_ns
    curve_stamp = (base / "evaluate/policy/curve.json").stat().st_mtime_ns
    generate_pipeline(str(project / "params.yaml"), overrides)
    assert (base / "exits/init/exits.safetensors").stat().st_mtime_ns == stamp
    assert (base / "evaluate/policy/curve.json").stat().st_mtime_ns == curve_stamp


def test_generate_bad_input(project, prefect_harness, monkeypatch):
    from flows.generation import generate_pipeline
    from models.generation import GenerationError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = tiny(project)
    with pytest.raises(GenerationError, match=r"layers \[9\] are outside 1\.\.4"):
        generate_pipeline(str(project / "params.yaml"), overrides + ["generate.exit_layers=[2, 9]"])
    empty = project / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(GenerationError, match="holds no prompts"):
        generate_pipeline(str(project / "params.yaml"), overrides + [f"generate.prompts.jsonl={empty}"])
    with pytest.raises(ValueError, match=r"generate.prompts.sources: \['mrpc'\] are not prepared tasks"):
        generate_pipeline(str(project / "params.yaml"), overrides + ["generate.prompts.sources=[mrpc]"])


def test_generate_flow_with_lora_adaptation(project, prefect_harness, monkeypatch):
    """``generate.adapt: lora``: the adapted decoder's folder (peft adapters), its cost report, and
    the exits and criteria run on it; the adapted weights refuse another decoder."""
    from flows.generation import generate_pipeline
    from models.errors import CheckpointError
    from tasks.generation import load_generation_decoder

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = [o for o in tiny(project) if not o.startswith("generate.criteria=")]
    overrides += ["generate.adapt=lora", "generate.adaptation.tokens=200", "generate.adaptation.lora_rank=2",
                  "generate.adaptation.batch_sequences=4", "generate.criteria={static: [2, 4]}"]
    report = generate_pipeline(str(project / "params.yaml"), overrides)
    base = project / "artifacts/generate/seed-42"
    adapted = base / "adapt-lora"
    assert (adapted / "lora/adapter_config.json").is_file() and (adapted / "lora/adapter_model.safetensors").is_file()
    cost = json.loads((adapted / "report.json").read_text())
    assert 0.0 <= cost["full_depth_agreement_with_original"] <= 1.0 and cost["perplexity_adapted"] > 1.0
    assert 0.0 <= cost["rouge_l_full_depth_vs_original"] <= 1.0 and cost["tokens"] >= 200
    assert json.loads((base / "distill-lora/report.json").read_text())["adapted"]
    assert json.loads((base / "exits-lora/init/exits.json").read_text())["adapted"]
    static = json.loads((base / "evaluate-lora/static/curve.json").read_text())
    assert {r["threshold"] for r in static} == {2, 4}
    assert "Adaptation (lora" in report["table"]

    decoder = str(project / "decoder")
    lm, _ = load_generation_decoder(decoder, adapted)
    original, _ = load_generation_decoder(decoder)
    assert any(not torch.equal(a, b) for a, b in zip(lm.state_dict().values(), original.state_dict().values()))
    with pytest.raises(CheckpointError, match=rf"of decoder '{decoder}', not of generate.decoder 'smollm2-135m'"):
        load_generation_decoder("smollm2-135m", adapted)


def test_generate_adaptation_bad_input(project, prefect_harness, monkeypatch):
    from config.params import ConfigError
    from flows.generation import generate_pipeline
    from models.adaptation import AdaptationError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = tiny(project) + ["generate.adapt=lora"]
    with pytest.raises(AdaptationError, match=r"generate.adaptation.lora_targets: \['c_attn'\] not among"):
        generate_pipeline(str(project / "params.yaml"), overrides + ["generate.adaptation.lora_targets=[c_attn]"])
    with pytest.raises(ConfigError, match="generate.adaptation.tokens"):
        generate_pipeline(str(project / "params.yaml"), overrides + ["generate.adaptation.tokens=0"])
