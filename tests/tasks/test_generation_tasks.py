"""Generation steps: decoder loading, prompt files, templates, ROUGE-L, fronts and the claim check."""

import json
import warnings

import pytest

from models.generation import GenerationError
from tasks.backbones import BackboneError
from tasks.generation import (
    chat_text,
    claim_check,
    detokenize,
    load_decoder,
    pareto,
    read_prompt_jsonl,
    rouge_l,
    warn_without_chat_template,
)
from tests.flows.conftest import make_backbone, make_decoder


def test_prompt_jsonl_errors_name_file_and_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "a"}\n\n{"prompt": "b", "response": "c"}\n')
    assert [r["prompt"] for r in read_prompt_jsonl(good)] == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": "b"\n')
    with pytest.raises(GenerationError, match=r"bad\.jsonl:2: not valid JSON"):
        read_prompt_jsonl(bad)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": "a"}\n')
    with pytest.raises(GenerationError, match=r'wrong\.jsonl:1: expected an object with a non-empty string "prompt"'):
        read_prompt_jsonl(wrong)


def test_decoder_loading_refuses_a_model_that_is_not_a_causal_lm(tmp_path):
    make_backbone(tmp_path / "bert")
    with pytest.raises(BackboneError, match="generate.decoder"):
        load_decoder(str(tmp_path / "bert"))
    with pytest.raises(BackboneError, match="does not exist"):
        load_decoder(str(tmp_path / "missing.gguf"))


def test_tokenizer_without_chat_template_falls_back_to_plain_text_with_a_warning(tmp_path):
    make_decoder(tmp_path / "plain", chat_template=False)
    _, tokenizer = load_decoder(str(tmp_path / "plain"))
    with pytest.warns(UserWarning, match="no chat template"):
        warn_without_chat_template(tokenizer, "plain")
    assert chat_text(tokenizer, "the movie was good") == "the movie was good"
    make_decoder(tmp_path / "chat")
    _, tokenizer = load_decoder(str(tmp_path / "chat"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_without_chat_template(tokenizer, "chat")
    assert chat_text(tokenizer, "the movie was good") == "<|user|> the movie was good <|end|> <|assistant|>"
    assert tokenizer.padding_side == "left"


def test_detokenize_undoes_ptb_spacing():
    assert detokenize("it 's a charming , funny movie -LRB- really -RRB- .") == "it's a charming, funny movie (really)."
    assert detokenize("does n't work") == "doesn't work"


def test_rouge_l_is_the_lcs_f_measure():
    assert rouge_l(["the cat sat"], ["the cat sat"]) == [1.0]
    # LCS "the sat" = 2 of 3 tokens on each side: P = R = F = 2/3
    assert rouge_l(["the dog sat"], ["the cat sat"])[0] == pytest.approx(2 / 3)
    assert rouge_l([""], [""]) == [1.0]


def test_pareto_front_and_claim_check():
    rows = [{"layer_speedup": 1.0, "rouge_l": 1.0}, {"layer_speedup": 2.0, "rouge_l": 0.8},
            {"layer_speedup": 1.5, "rouge_l": 0.7}, {"layer_speedup": 3.0, "rouge_l": 0.5}]
    assert [r["layer_speedup"] for r in pareto(rows)] == [1.0, 2.0, 3.0]  # 1.5x at 0.7 is beaten by 2x at 0.8

    def curve(points):
        return [{"split": "test", "layer_speedup": x, "rouge_l": y} for x, y in points]

    curves = {"policy": curve([(1.0, 1.0), (3.0, 0.7)]), "softmax": curve([(1.0, 1.0), (3.0, 0.4)]),
              "saturation": curve([(1.0, 1.0), (2.0, 0.8), (4.0, 0.3)])}
    out = claim_check(curves, [1.5, 2.0, 3.0, 5.0])
    at = {row["speedup"]: row for row in out["rows"]}
    assert at[2.0]["policy"] == pytest.approx(0.85) and at[2.0]["calm_best"] == pytest.approx(0.8)
    assert at[3.0]["calm_best"] == pytest.approx(0.55)  # saturation, interpolated between 2x and 4x
    assert at[5.0]["policy"] is None  # outside the curve
    assert out["holds"] is True and out["margins"][3.0] == pytest.approx(0.15)
    curves["saturation"] = curve([(1.0, 1.0), (3.0, 0.9)])
    assert claim_check(curves, [2.0, 3.0])["holds"] is False
    # only the policy reaches 3x: it holds there; a curve's front starts at the full-depth anchor
    curves = {"policy": curve([(3.0, 0.6)]), "softmax": curve([(2.0, 0.5)]), "saturation": curve([(1.2, 0.9)])}
    out = claim_check(curves, [1.5, 2.0, 3.0])
    at = {row["speedup"]: row for row in out["rows"]}
    assert at[1.5]["policy"] == pytest.approx(1.0 - 0.4 * 0.25)  # interpolated from (1, 1) to (3, 0.6)
    assert at[3.0]["calm_best"] is None and out["reach"] == {"policy": 3.0, "softmax": 2.0, "saturation": 1.2}
    assert out["holds"] is True and set(out["margins"]) == {2.0}
    flops = claim_check({"policy": [{"split": "test", "layer_speedup": 3.0, "flops_speedup": 1.4, "rouge_l": 0.7}]},
                        [2.0], "flops_speedup")
    assert flops["holds"] is None and flops["reach"] == {"policy": 1.4}


def test_report_picks_the_fastest_dev_setting_over_the_bar_and_reports_its_test_numbers(tmp_path):
    from tasks.generation import report_generation

    def row(split, threshold, speedup, rouge):
        return {"split": split, "threshold": threshold, "layer_speedup": speedup, "flops_speedup": speedup,
                "avg_exit_layer": 30 / speedup, "rouge_l": rouge}

    curve = [row("dev", 0.9, 1.1, 0.95), row("test", 0.9, 1.1, 0.90),
             row("dev", 0.5, 1.5, 0.85), row("test", 0.5, 1.6, 0.70),  # fastest over 0.8 on dev; test lower
             row("dev", 0.1, 2.0, 0.60), row("test", 0.1, 2.0, 0.95)]  # best on test, but under the bar on dev
    (tmp_path / "policy.json").write_text(json.dumps(curve))
    (tmp_path / "examples.json").write_text(json.dumps([{"threshold": 0.9, "responses": []}]))
    out = report_generation.fn({"policy": tmp_path / "policy.json"}, tmp_path / "examples.json", [1.5], 0.8,
                               tmp_path / "report", "t")
    picked = json.loads((tmp_path / "report/summary.json").read_text())["operating_points"]["policy"]
    assert picked["threshold"] == 0.5 and picked["rouge_l"] == 0.70 and picked["layer_speedup"] == 1.6
    assert "| policy | 0.5 | 0.700 | 1.60x |" in out["table"]
