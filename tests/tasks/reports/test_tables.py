"""The Markdown table helper and cell texts (tasks/reports/tables.py)."""

from tasks.reports.tables import escape_cell, format_mean_std, markdown_table


def test_markdown_table_has_a_head_a_rule_and_one_line_per_row():
    assert markdown_table(["a", "b"], [["1", "2"], ["3", escape_cell("x|y\nz")]]) == (
        "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | x\\|y z |")
    assert markdown_table(["only"], []) == "| only |\n|---|"
    assert escape_cell("abcdef", 3) == "abc"


def test_mean_std_texts():
    assert format_mean_std({"mean": 71.25, "std": 1.34, "n": 2, "of": 3}) == "71.2 ± 1.3 (2/3 seeds)"
    assert format_mean_std({"mean": 2.0, "std": None, "n": 1, "of": 1}, 2, "x") == "2.00x"
    assert format_mean_std({"mean": None, "std": None, "n": 0, "of": 2}) == "not reached"
    assert format_mean_std({"mean": None, "std": None, "n": 0, "of": 0}) == "—"
