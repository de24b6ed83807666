"""Difficulty files: parsing, validation errors that name file and row, word/sub-token alignment."""

import pytest
from transformers import BertTokenizer

from tasks.difficulty import (
    IGNORE,
    DifficultyDataError,
    annotated_word_rows,
    assign_parts,
    encode_words,
    read_conll,
    read_difficulty_tsv,
    token_batches_source,
)
from tasks.learnability import DifficultyParts, SealedPartError, _encode, check_difficulty_rows

HEADER = "sentence1\tsentence2\tlabel\n"


def test_published_format_parses_lists_and_single_bits(tmp_path):
    (tmp_path / "m.tsv").write_text(HEADER + "a b\tc\t[1, 0, 1]\nd\te f\t[0, 0, 1]\n")
    rows = read_difficulty_tsv(tmp_path / "m.tsv")
    assert [r["labels"] for r in rows] == [[1, 0, 1], [0, 0, 1]] and rows[1]["text_b"] == "e f"
    (tmp_path / "h.tsv").write_text(HEADER + "a\tb\t1\nc\td\t0\n")
    assert [r["labels"] for r in read_difficulty_tsv(tmp_path / "h.tsv")] == [[1], [0]]


@pytest.mark.parametrize("body, message", [
    ("a\tb\t[1, 0, 1]\nc\td\t[1, 0]\n", r"bad.tsv:3: 2 labels but earlier rows have 3"),
    ("a\tb\t[1, 2, 1]\n", r"bad.tsv:2: label '\[1, 2, 1\]' must contain only 0 and 1"),
    ("a\tb\tyes\n", r"bad.tsv:2: label 'yes' is not a bit or a JSON list of bits"),
    ("a\tb\n", r"bad.tsv:2: expected 3 tab-separated columns, got 2"),
])
def test_malformed_difficulty_files_name_file_and_line(tmp_path, body, message):
    (tmp_path / "bad.tsv").write_text(HEADER + body)
    with pytest.raises(DifficultyDataError, match=message):
        read_difficulty_tsv(tmp_path / "bad.tsv")


def test_annotator_depth_must_match_the_labels():
    rows = [{"text_a": "a", "labels": [1, 0, 1, 1], "part": "train"}]
    assert check_difficulty_rows(rows, "d.jsonl") == 4
    with pytest.raises(DifficultyDataError, match=r"d.jsonl: labels have 4 layers but the annotator has 6"):
        check_difficulty_rows(rows, "d.jsonl", num_layers=6)
    words = [{"words": ["a", "b"], "labels": [[1, 1], [1, 2]], "part": "train"}]
    with pytest.raises(DifficultyDataError, match=r"d.jsonl: row 1: labels must be 0 or 1"):
        check_difficulty_rows(words, "d.jsonl")


def _tokenizer():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "play", "##ing", "##er", "cat", "sat"]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


def test_word_labels_sit_on_the_first_sub_token_of_split_words():
    tok = _tokenizer()
    enc = encode_words(tok, [["the", "playing", "cat", "player"]], max_length=16)
    assert enc["input_ids"][0] == [2, 5, 6, 7, 9, 6, 8, 3]  # playing = play ##ing, player = play ##er
    assert enc["word_index"][0] == [-1, 0, 1, -1, 2, 3, -1, -1]
    tags = token_batches_source(tok, [{"words": ["the", "playing", "cat", "player"], "tags": ["O", "B-X", "O", "I-X"]}],
                                ["B-X", "I-X", "O"], 16)["tags"][0]
    assert tags == [IGNORE, 2, 0, IGNORE, 2, 1, IGNORE, IGNORE]
    # difficulty bits per word follow the same alignment
    row = {"words": ["the", "playing", "cat"], "labels": [[1, 1], [0, 1], [1, 0]], "part": "train"}
    labels = _encode([row], tok, 16)["labels"][0]
    assert labels == [[IGNORE] * 2, [1, 1], [0, 1], [IGNORE] * 2, [1, 0], [IGNORE] * 2]


def test_conll_reader_splits_sentences_and_skips_docstart(tmp_path):
    (tmp_path / "c.txt").write_text("-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\n")
    assert read_conll(tmp_path / "c.txt") == [{"words": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
                                               {"words": ["Peter"], "tags": ["B-PER"]}]
    (tmp_path / "bad.txt").write_text("EU NNP B-ORG\nrejects\n")
    with pytest.raises(DifficultyDataError, match=r"bad.txt:2: expected 'token ... tag'"):
        read_conll(tmp_path / "bad.txt")


def test_parts_are_seeded_and_the_test_part_is_sealed_until_opened():
    parts = assign_parts(100, (0.7, 0.1, 0.2), seed=3)
    assert parts == assign_parts(100, (0.7, 0.1, 0.2), seed=3) != assign_parts(100, (0.7, 0.1, 0.2), seed=4)
    assert (parts.count("train"), parts.count("dev"), parts.count("test")) == (70, 10, 20)
    rows = [{"text_a": str(i), "labels": [1], "part": p} for i, p in enumerate(parts)]
    split = DifficultyParts(rows, "x")
    assert len(split.train) == 70 and len(split.dev) == 10
    with pytest.raises(SealedPartError):
        split.test
    assert len(split.open_test()) == 20 and len(split.test) == 20


def test_batches_follow_an_oversampled_order_to_its_end():
    from tasks.features import batches

    enc = {"input_ids": [[2, 5], [2, 6, 7], [2, 8]], "labels": [[1, 0], [0, 0], [1, 1]]}
    order = [2, 0, 2, 1, 2]  # row 2 repeated: longer than the split
    got = list(batches(enc, 2, pad_id=0, order=order))
    assert [b["labels"].tolist() for b in got] == [[[1, 1], [1, 0]], [[1, 1], [0, 0]], [[1, 1]]]
    assert got[1]["input_ids"].tolist() == [[2, 8, 0], [2, 6, 7]] and got[1]["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]


def test_a_word_that_tokenises_to_nothing_does_not_shift_later_labels():
    tok = _tokenizer()
    sentence = {"words": ["the", "\u200b", "cat", "sat"], "tags": ["O", "O", "B-X", "O"]}  # zero-width space: no sub-token
    enc = token_batches_source(tok, [sentence], ["B-X", "I-X", "O"], 16)
    bits = [[[1, 1], [0, 1], [1, 0]]]  # one bit row per labelled first sub-token: the, cat, sat
    rows = annotated_word_rows([sentence], enc, bits, ["train"])
    assert rows == [{"words": ["the", "cat", "sat"], "labels": [[1, 1], [0, 1], [1, 0]], "part": "train"}]
    with pytest.raises(DifficultyDataError, match="sentence 0"):
        annotated_word_rows([sentence], enc, [bits[0][:2]], ["train"])
