"""Generation steps: decoder loading, prompt files, templates, ROUGE-L."""

import warnings

import pytest

from models.generation import GenerationError
from tasks.backbones import BackboneError, load_decoder
from tasks.generation import chat_text, rouge_l, warn_without_chat_template
from tasks.prompts import detokenize, read_prompt_jsonl
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


def test_fully_adapted_weights_round_trip_and_refuse_another_decoder(tmp_path):
    """``generate.adapt: full`` saves the whole model (``save_pretrained``) beside ``adaptation.json``;
    ``load_generation_decoder`` reads it back for the same decoder only."""
    import json

    import torch

    from models.errors import CheckpointError
    from tasks.generation import ADAPTATION_FILE, load_generation_decoder
    from tasks.generation_distill import save_adapted_weights

    decoder = str(make_decoder(tmp_path / "decoder"))
    lm, _ = load_decoder(decoder)
    with torch.no_grad():
        lm.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    adapted = tmp_path / "adapt-full"
    save_adapted_weights(lm, adapted / "model")
    (adapted / ADAPTATION_FILE).write_text(json.dumps({"decoder": decoder, "adapt": "full", "weights": "model"}))
    back, _ = load_generation_decoder(decoder, adapted)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), lm.state_dict().values()))
    assert not back.training and not any(p.requires_grad for p in back.parameters())
    other = str(make_decoder(tmp_path / "other", layers=2))
    with pytest.raises(CheckpointError, match=rf"of decoder '{decoder}', not of generate.decoder '{other}'"):
        load_generation_decoder(other, adapted)
    (adapted / ADAPTATION_FILE).write_text(json.dumps({"decoder": other, "adapt": "full", "weights": "model"}))
    with pytest.raises(CheckpointError, match=rf"do not fit generate.decoder '{other}'"):
        load_generation_decoder(other, adapted)  # the folder claims the 2-layer decoder, but holds 4 layers
