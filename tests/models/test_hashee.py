"""HashEE: hash ordering rules, bucket mapping, prefix path == masked path, compute really skipped."""

import pytest
import torch
from sklearn.metrics import mutual_info_score
from torch.testing import assert_close
from torch.utils.flop_counter import FlopCounterMode

from models.exiting import MultiExitConfig
from models.hashee import (
    HashEEModel,
    HashTableError,
    bucket_layers,
    build_clustered_hash,
    build_frequency_hash,
    build_mi_hash,
    build_random_hash,
    check_table,
    hashee_instance_flops,
    masked_token_exit_forward,
    mutual_information,
)
from tests.conftest import VOCAB, tiny_backbone, tiny_batch

SPECIAL = [0, 1, 2]  # pad, unk, cls in these tests


def test_bucket_layers_follow_paper_formula_and_validate_b():
    assert bucket_layers(12, 3) == [1, 5, 9]
    assert bucket_layers(6, 6) == [1, 2, 3, 4, 5, 6]
    assert bucket_layers(6, 2) == [1, 4]
    for bad in (0, 7):
        with pytest.raises(HashTableError, match="hashee.buckets must be between 1 and the number of layers"):
            bucket_layers(6, bad)


def test_frequency_hash_most_frequent_exits_earliest_special_and_unseen_run_all_layers():
    corpus = [[2, 10, 10, 10, 11, 12], [2, 10, 10, 11, 11, 12, 13]]  # counts: 10:5, 11:3, 12:2, 13:1
    table = build_frequency_hash(corpus, 20, num_layers=4, num_buckets=4, special_ids=SPECIAL)
    assert table[[10, 11, 12, 13]].tolist() == [1, 2, 3, 4]
    assert table[SPECIAL].tolist() == [4, 4, 4]  # [CLS] etc. keep all layers
    assert table[15].item() == 4  # never seen
    # two buckets of equal types: {10, 11} -> layer 1, {12, 13} -> layer 3
    assert build_frequency_hash(corpus, 20, 4, 2, SPECIAL)[[10, 11, 12, 13]].tolist() == [1, 1, 3, 3]


def test_frequency_hash_equal_mass_splits_by_token_mass():
    corpus = [[10] * 6 + [11] * 2 + [12, 13]]  # mass 6/2/1/1 of 10
    table = build_frequency_hash(corpus, 20, 4, 2, SPECIAL, equal_mass=True)
    assert table[[10, 11, 12, 13]].tolist() == [1, 3, 3, 3]


def test_mi_hash_matches_library_mutual_information_and_ranks_highest_first():
    corpus = [[10, 12], [10, 12, 12], [11, 12], [11, 13], [10, 13]]
    labels = [1, 1, 0, 0, 1]
    mi = mutual_information(corpus, labels, SPECIAL)
    occurrences = [(t, y) for toks, y in zip(corpus, labels) for t in toks]
    for token in (10, 11, 12, 13):
        ref = mutual_info_score([t == token for t, _ in occurrences], [y for _, y in occurrences])
        assert mi[token] == pytest.approx(ref, rel=1e-9)
    table = build_mi_hash(corpus, labels, 20, 4, 4, SPECIAL)
    ranked = sorted(mi, key=lambda t: -mi[t])
    assert [table[t].item() for t in ranked] == [1, 2, 3, 4]


def test_mi_hash_multiclass_and_regression_labels():
    corpus = [[10], [11], [12], [10], [11], [12]]
    table = build_mi_hash(corpus, [0, 1, 2, 0, 1, 2], 20, 3, 3, SPECIAL)  # every token perfectly informative
    assert set(table[[10, 11, 12]].tolist()) == {1, 2, 3}
    reg = build_mi_hash([[10, 13], [10, 13], [11, 13], [11, 13], [12, 13]], [0.1, 0.2, 2.5, 2.6, 4.9], 20, 2, 2, SPECIAL,
                        regression=True)
    assert reg[13].item() == 2  # present under every label: no information, exits last


def test_clustered_hash_smallest_average_norm_cluster_exits_earliest():
    emb = torch.zeros(20, 4)
    emb[10:13] = torch.tensor([1.0, 0, 0, 0]) * torch.tensor([[1.0], [1.1], [0.9]])  # small norms
    emb[13:16] = torch.tensor([0, 10.0, 0, 0]) * torch.tensor([[1.0], [1.1], [0.9]])  # large norms
    table = build_clustered_hash(emb, range(10, 16), num_layers=4, num_buckets=2, special_ids=SPECIAL, seed=0)
    assert table[10:13].tolist() == [1, 1, 1] and table[13:16].tolist() == [3, 3, 3]
    assert table[5].item() == 4  # unobserved


def test_random_hash_is_seeded_and_incons_differs():
    a = build_random_hash(500, 6, 6, SPECIAL, seed=0)
    assert torch.equal(a, build_random_hash(500, 6, 6, SPECIAL, seed=0))
    assert not torch.equal(a, build_random_hash(500, 6, 6, SPECIAL, seed=1))  # Rand-incons at inference
    assert set(a.tolist()) == {1, 2, 3, 4, 5, 6} and a[SPECIAL].tolist() == [6, 6, 6]


def test_empty_training_split_is_an_error():
    with pytest.raises(HashTableError, match="empty"):
        build_frequency_hash([], 20, 4, 2, SPECIAL)
    with pytest.raises(HashTableError, match="empty"):
        build_mi_hash([], [], 20, 4, 2, SPECIAL)


def _hashee(family="bert", layers=4, buckets=4, seed=0):
    backbone = tiny_backbone(family, layers)
    table = build_random_hash(VOCAB, layers, buckets, SPECIAL, seed=seed)
    torch.manual_seed(1)
    return HashEEModel(backbone, MultiExitConfig(num_outputs=3, head_dropout=0.0, pooling="mean"), table).eval()


@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "distilbert"])
def test_prefix_path_equals_masked_simulation_with_padding(family):
    model = _hashee(family)
    b = tiny_batch(batch=7, max_len=11, seed=3)  # varying lengths, right padding
    reference = masked_token_exit_forward(model, b["input_ids"], b["attention_mask"], model.exit_table)
    states = model.token_states(b["input_ids"], b["attention_mask"])
    real = b["attention_mask"].bool()
    assert_close(states[real], reference[real], atol=1e-5, rtol=1e-4)
    # the prediction path (sorted, trimmed, last head) agrees with the head on the reference states
    head_ref, _ = model.heads[-1](reference, b["attention_mask"])
    assert_close(model.early_exit(b["input_ids"], b["attention_mask"]).logits, head_ref, atol=1e-5, rtol=1e-4)
    assert_close(model(b["input_ids"], b["attention_mask"]).logits[-1], head_ref, atol=1e-5, rtol=1e-4)


def test_ffn_rows_per_layer_equal_running_tokens():
    model = _hashee("bert", layers=4)
    b = tiny_batch(batch=1, max_len=12, seed=4)
    rows = []
    for layer in model.adapter.layers:
        layer.intermediate.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0] * args[0].shape[1]))
    model.early_exit(b["input_ids"], b["attention_mask"])
    exits = model.exit_table[b["input_ids"][0]]
    assert rows == [int((exits >= k).sum()) for k in range(1, 5)]
    assert rows[0] > rows[-1]  # compute really shrinks with depth


def test_batched_ffn_rows_are_batch_times_largest_running_prefix():
    model = _hashee("bert", layers=4)
    b = tiny_batch(batch=5, max_len=10, seed=5)
    rows = []
    for layer in model.adapter.layers:
        layer.intermediate.register_forward_hook(lambda mod, args, out: rows.append(tuple(args[0].shape[:2])))
    model.early_exit(b["input_ids"], b["attention_mask"])
    running = model.token_exit_layers(b["input_ids"], b["attention_mask"])
    assert rows == [(5, int((running >= k).sum(1).max())) for k in range(1, 5)]


def test_analytic_flops_match_flop_counter():
    model = _hashee("bert", layers=4)
    b = tiny_batch(batch=1, max_len=12, seed=6)
    with FlopCounterMode(display=False) as counter:
        model.early_exit(b["input_ids"], b["attention_mask"])
    analytic = hashee_instance_flops(model, model.exit_table[b["input_ids"][0]].tolist())
    assert analytic == pytest.approx(counter.get_total_flops(), rel=0.02)


def test_table_for_another_vocabulary_or_depth_is_refused():
    with pytest.raises(HashTableError, match="another tokenizer"):
        check_table(torch.ones(50, dtype=torch.long), VOCAB, 4)
    with pytest.raises(HashTableError, match="another depth"):
        check_table(torch.full((VOCAB,), 6, dtype=torch.long), VOCAB, 4)
    with pytest.raises(HashTableError, match="another depth"):
        HashEEModel(tiny_backbone("bert", 2), MultiExitConfig(num_outputs=2), build_random_hash(VOCAB, 4, 4, SPECIAL, 0))
