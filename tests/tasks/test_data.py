"""Loader quirks (BOM, CRLF, doubled quotes, MRPC layouts) and malformed-row errors."""

import pyarrow.parquet as pq
import pytest

from config.params import DataConfig, TaskSpec
from tasks.data import BUILTIN_TASKS, DataError, prepare_task, read_split


def write(path, text, bom=False, crlf=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_bom_and_crlf_are_stripped(tmp_path):
    p = write(tmp_path / "snli" / "dev.tsv", "premise\thypothesis\tlabel\nA man .\tA person .\t0\nA dog .\tA cat .\t2\n",
              bom=True, crlf=True)
    rows = read_split(p, BUILTIN_TASKS["snli"], "dev")
    assert rows["text_a"] == ["A man .", "A dog ."]
    assert rows["text_b"] == ["A person .", "A cat ."]
    assert rows["label"] == [0, 2]


def test_mrpc_two_layouts_and_csv_doubled_quotes(tmp_path):
    spec = BUILTIN_TASKS["mrpc"]
    train = write(tmp_path / "train.tsv",
                  'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t11\t12\t" He said .\tHe said " so " .\n', bom=True)
    test = write(tmp_path / "test.tsv",
                 'label\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t-\t-\t"She said "" hi "" ."\t"""Quoted"" start"\n')
    tr = read_split(train, spec, "train")  # not CSV-quoted: quotes are literal text
    assert tr["text_a"] == ['" He said .'] and tr["text_b"] == ['He said " so " .'] and tr["label"] == [1]
    te = read_split(test, spec, "test")  # CSV-quoted with doubled quotes
    assert te["text_a"] == ['She said " hi " .'] and te["text_b"] == ['"Quoted" start'] and te["label"] == [0]


def test_regression_float_labels(tmp_path):
    p = write(tmp_path / "dev.tsv", "sentence1\tsentence2\tlabel\nA .\tB .\t3.800\nC .\tD .\t0\n")
    assert read_split(p, BUILTIN_TASKS["stsb"], "dev")["label"] == [3.8, 0.0]


@pytest.mark.parametrize("body, problem", [
    ("sentence\tlabel\nGood .\t1\nBad .\n", r"train.tsv:3: expected 2 tab-separated fields, found 1"),
    ("sentence\tlabel\nGood .\t1\nBad .\tx\n", r"train.tsv:3: label 'x' is not an integer"),
    ("sentence\tlabel\nGood .\t7\n", r"train.tsv:2: label 7 is outside 0..1"),
    ("sentence\tlabel\n \t1\n", r"train.tsv:2: empty text in column 'sentence'"),
    ("text\tlabel\nGood .\t1\n", r"train.tsv:2: missing text column 'sentence'"),
    ("sentence\tlabel\n", r"no data rows"),
])
def test_malformed_rows_name_file_line_and_problem(tmp_path, body, problem):
    p = write(tmp_path / "train.tsv", body)
    with pytest.raises(DataError, match=problem):
        read_split(p, BUILTIN_TASKS["sst2"], "train")


def test_regression_label_must_be_a_finite_number(tmp_path):
    p = write(tmp_path / "dev.tsv", "sentence1\tsentence2\tlabel\nA .\tB .\tnan\n")
    with pytest.raises(DataError, match="dev.tsv:2: label 'nan' is not finite"):
        read_split(p, BUILTIN_TASKS["stsb"], "dev")


def test_custom_task_with_class_names_from_jsonl_and_csv(tmp_path):
    write(tmp_path / "src" / "train.jsonl", '{"review": "great", "sentiment": "positive"}\n{"review": "awful", "sentiment": "negative"}\n')
    write(tmp_path / "src" / "dev.csv", 'review,sentiment\n"fine, really",positive\n')
    spec = TaskSpec(files={"train": "train.jsonl", "dev": "dev.csv"}, text_columns=["review"], label_column="sentiment",
                    label_names=["negative", "positive"])
    data = DataConfig(tasks=["reviews"], custom={"reviews": spec})
    meta = prepare_task("reviews", data, tmp_path / "src", tmp_path / "out")
    assert meta["rows"] == {"train": 2, "dev": 1}
    assert pq.read_table(tmp_path / "out" / "reviews" / "train.parquet").to_pydict()["label"] == [1, 0]
    assert pq.read_table(tmp_path / "out" / "reviews" / "dev.parquet").to_pydict()["text_a"] == ["fine, really"]


def test_failed_prepare_leaves_nothing_half_written(tmp_path):
    write(tmp_path / "src" / "sst2" / "train.tsv", "sentence\tlabel\nok .\t1\n")
    write(tmp_path / "src" / "sst2" / "dev.tsv", "sentence\tlabel\nok .\t1\n")
    write(tmp_path / "src" / "sst2" / "test.tsv", "sentence\tlabel\nbroken\n")
    with pytest.raises(DataError, match="test.tsv:2"):
        prepare_task("sst2", DataConfig(), tmp_path / "src", tmp_path / "out")
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []  # no partial split, no temp directory


def test_missing_source_and_unknown_task_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data.source_dir"):
        prepare_task("sst2", DataConfig(), tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(DataError, match="unknown task 'sst3'; choose one of .*sst2"):
        prepare_task("sst3", DataConfig(), tmp_path, tmp_path / "out")


MRPC_HEADER = "label\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


def mrpc_test_file(tmp_path, n=80, stray=None):
    """An MRPC-style CSV-quoted test.tsv of ``n`` rows, some with doubled quotes; row ``stray`` opens a quote."""
    lines = [MRPC_HEADER.rstrip("\n")]
    for i in range(n):
        s1 = f'"He said "" hi {i} "" ."' if i % 5 == 0 else f"Plain {i} ."
        if i == stray:
            s1 = f'"Stray {i} .'
        lines.append(f"{i % 2}\t-\t-\t{s1}\tOther {i} .")
    return write(tmp_path / "mrpc" / "test.tsv", "\n".join(lines) + "\n")


def test_quoted_split_parses_doubled_quotes_row_for_row(tmp_path):
    rows = read_split(mrpc_test_file(tmp_path), BUILTIN_TASKS["mrpc"], "test")
    assert len(rows["label"]) == 80 and rows["text_a"][5] == 'He said " hi 5 " .'


@pytest.mark.parametrize("body, problem", [
    # a stray opening quote on row 37 (line 39) used to swallow lines 39-42 into one field: 77 rows, no error
    (None, r"test.tsv:39: field 4 opens a quote that is not closed.*runs on to line 42"),
    # on the last line the quote runs to the end of the file: the row used to load as if it were fine
    (MRPC_HEADER + '0\t-\t-\tA .\tB .\n1\t-\t-\tC .\t"D .\n', r"test.tsv:3: field 5 opens a quote that is not closed"),
    # a quote closed after a tab merges two columns; with one column too many the row used to look fine
    (MRPC_HEADER + '0\t-\t-\t"A .\tB ."\tC .\n', r"test.tsv:2: field 4 opens a quote that is not closed"),
])
def test_unclosed_quote_stops_at_the_line_where_it_opens(tmp_path, body, problem):
    path = mrpc_test_file(tmp_path, stray=37) if body is None else write(tmp_path / "test.tsv", body)
    with pytest.raises(DataError, match=problem):
        read_split(path, BUILTIN_TASKS["mrpc"], "test")


@pytest.mark.parametrize("bom, crlf, line, offset", [(False, False, 3, 25), (True, True, 3, 30)])
def test_non_utf8_bytes_name_file_line_and_byte_offset(tmp_path, bom, crlf, line, offset):
    p = write(tmp_path / "train.tsv", "sentence\tlabel\nok .\t1\ncaf\x00 .\t0\n", bom=bom, crlf=crlf)
    p.write_bytes(p.read_bytes().replace(b"\x00", b"\xe9"))  # Latin-1 e-acute
    problem = rf"train.tsv:{line}: byte 0xe9 at byte offset {offset} is not valid UTF-8.*must be UTF-8"
    with pytest.raises(DataError, match=problem):
        read_split(p, BUILTIN_TASKS["sst2"], "train")


def test_blank_lines_are_skipped_with_one_warning_per_file(tmp_path, caplog):
    p = write(tmp_path / "train.tsv", "sentence\tlabel\nA .\t1\n\nB .\t0\n\n \nC .\t1\n")
    with caplog.at_level("WARNING", logger="tasks.data"):
        rows = read_split(p, BUILTIN_TASKS["sst2"], "train")
        read_split(write(tmp_path / "dev.tsv", "sentence\tlabel\nA .\t1\n"), BUILTIN_TASKS["sst2"], "dev")
    assert rows["text_a"] == ["A .", "B .", "C ."]
    assert [r.getMessage() for r in caplog.records] == [f"{p}: skipped 3 blank lines (first at line 3)"]
