"""HashEE on an encoder-decoder (BART): token exits in the encoder, the decoder untouched."""

import pytest
import torch
from torch.testing import assert_close
from torch.utils.flop_counter import FlopCounterMode
from transformers import BartConfig, BartForConditionalGeneration

from models.adapters import adapter_for
from models.hashee import HashEEEncoder, HashTableError, build_random_hash, hashee_encoder_flops, masked_token_exit_forward
from tests.conftest import VOCAB, tiny_backbone, tiny_batch

SPECIAL = [0, 1, 2]  # pad, unk, cls-like bos in these tests
LAYERS = 4


def tiny_bart(attn: str = "eager", layers: int = LAYERS, seed: int = 0) -> BartForConditionalGeneration:
    """A tiny random BART: d_model 32, 4 heads, FFN 37, vocab 99, ``layers`` encoder and 2 decoder layers;
    weights drawn with std 0.2 (HF: 0.02) so the decoder output depends visibly on the encoder states."""
    torch.manual_seed(seed)
    config = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=layers, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=0, bos_token_id=2,
                        eos_token_id=3, decoder_start_token_id=2, forced_eos_token_id=None, scale_embedding=True, init_std=0.2,
                        attn_implementation=attn)
    return BartForConditionalGeneration(config).eval()


def _table(seed: int = 0) -> torch.Tensor:
    return build_random_hash(VOCAB, LAYERS, LAYERS, SPECIAL, seed=seed)


def _full_table() -> torch.Tensor:
    return torch.full((VOCAB,), LAYERS, dtype=torch.long)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_prefix_path_equals_masked_simulation_for_every_token_with_padding(attn):
    bart = tiny_bart(attn)
    encoder = HashEEEncoder(bart, _table())
    b = tiny_batch(batch=7, max_len=11, seed=3)  # varying lengths, right padding
    real = b["attention_mask"].bool()
    assert len(set(encoder.exit_table[b["input_ids"][real]].tolist())) == LAYERS  # tokens exit at every layer
    with torch.no_grad():
        states = encoder(b["input_ids"], b["attention_mask"]).last_hidden_state
        reference = masked_token_exit_forward(encoder, b["input_ids"], b["attention_mask"], encoder.exit_table)
        full = bart.get_encoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    assert states.shape == (7, 11, 32)
    assert_close(states[real], reference[real], atol=1e-5, rtol=1e-4)
    assert (states[real] - full[real]).abs().max() > 1e-2  # the exits really change the encoder output


def test_bart_adapter_layers_match_hf_hidden_states():
    bart = tiny_bart()
    adapter = adapter_for(bart)
    b = tiny_batch(batch=4, max_len=9, seed=1)
    with torch.no_grad():
        hf = bart.get_encoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        hidden = adapter.embed(b["input_ids"])
        mask = adapter.attention_mask(b["attention_mask"], hidden)
        assert_close(hidden, hf.hidden_states[0])
        for k, layer in enumerate(adapter.layers, start=1):
            hidden = layer(hidden, mask)
            assert_close(hidden, hf.hidden_states[k])
    assert (adapter.num_layers, adapter.hidden_size, adapter.intermediate_size) == (LAYERS, 32, 37)


def test_analytic_encoder_flops_match_flop_counter():
    bart = tiny_bart("eager")
    encoder = HashEEEncoder(bart, _table())
    b = tiny_batch(batch=1, max_len=12, seed=6)
    exits = encoder.exit_table[b["input_ids"][0]].tolist()
    assert min(exits) < LAYERS  # some tokens skip layers
    with FlopCounterMode(display=False) as counter:
        encoder(b["input_ids"], b["attention_mask"])
    assert hashee_encoder_flops(encoder.adapter, exits) == counter.get_total_flops()
    with FlopCounterMode(display=False) as full:
        bart.get_encoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    assert hashee_encoder_flops(encoder.adapter, [LAYERS] * len(exits)) == full.get_total_flops()
    assert counter.get_total_flops() < full.get_total_flops()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_every_token_at_last_layer_equals_hf_encoder(attn):
    bart = tiny_bart(attn)
    b = tiny_batch(batch=6, max_len=10, seed=2)
    real = b["attention_mask"].bool()
    with torch.no_grad():
        states = HashEEEncoder(bart, _full_table())(b["input_ids"], b["attention_mask"]).last_hidden_state
        hf = bart.get_encoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    assert_close(states[real], hf[real], atol=1e-5, rtol=1e-4)


def test_untouched_decoder_reads_hash_exit_encoder_outputs():
    bart = tiny_bart("sdpa")
    b = tiny_batch(batch=5, max_len=10, seed=4)
    ids, mask = b["input_ids"], b["attention_mask"]
    decoder_ids = torch.randint(4, VOCAB, (5, 6), generator=torch.Generator().manual_seed(0))
    decoder_ids[:, 0] = bart.config.decoder_start_token_id
    before = {k: v.clone() for k, v in bart.model.decoder.state_dict().items()}
    with torch.no_grad():
        hashed = HashEEEncoder(bart, _table())(ids, mask)
        logits = bart(attention_mask=mask, decoder_input_ids=decoder_ids, encoder_outputs=hashed).logits
        # the decoder by hand on the same encoder states: HF's seq2seq head adds nothing else
        dec = bart.model.decoder(input_ids=decoder_ids, encoder_hidden_states=hashed.last_hidden_state,
                                 encoder_attention_mask=mask).last_hidden_state
        assert_close(logits, bart.lm_head(dec) + bart.final_logits_bias, atol=1e-5, rtol=1e-4)
        full_logits = bart(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        assert (logits - full_logits).abs().max() > 1e-3  # the decoder saw the hash-exit states
        # every token at layer L: the whole seq2seq forward and greedy generation are HF's own
        all_last = HashEEEncoder(bart, _full_table())(ids, mask)
        assert_close(bart(attention_mask=mask, decoder_input_ids=decoder_ids, encoder_outputs=all_last).logits, full_logits,
                     atol=1e-5, rtol=1e-4)
        generated = bart.generate(encoder_outputs=all_last, attention_mask=mask, max_new_tokens=5, do_sample=False,
                                  num_beams=1)
        assert torch.equal(generated, bart.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                                                    num_beams=1))
        assert bart.generate(encoder_outputs=hashed, attention_mask=mask, max_new_tokens=5).shape[0] == 5
    after = bart.model.decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_table_or_backbone_is_refused_with_a_clear_error():
    bart = tiny_bart()
    with pytest.raises(HashTableError, match="hash table has 50 entries but the model's vocabulary has 99"):
        HashEEEncoder(bart, torch.ones(50, dtype=torch.long))
    for bad in (0, LAYERS + 1):
        table = _table()
        table[10] = bad
        with pytest.raises(HashTableError, match=rf"span {min(bad, 1)}\.\.{max(bad, LAYERS)} but must lie in 1\.\.{LAYERS}"):
            HashEEEncoder(bart, table)
    with pytest.raises(HashTableError, match="not available for 'albert'; use bart, bert"):
        HashEEEncoder(tiny_backbone("albert", LAYERS), _table())
