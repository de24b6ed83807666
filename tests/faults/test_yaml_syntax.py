"""A YAML syntax error in a params file: one ``error:`` line naming the file, line and column; exit 2."""

import pytest

from tests.faults.conftest import error_lines, exitflow

pytestmark = pytest.mark.timeout(120)  # a hung command fails, not the suite

GOOD = "train:\n  epochs: 1\n"
TABBED = "train:\n\tepochs: 1\n"  # a tab in the indentation


def test_a_tab_in_the_indentation_names_file_line_and_column(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(TABBED)
    result = exitflow("prepare", "--params", str(params))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert error_lines(result.output) == [(f"error: {params}:2:1: YAML syntax error: found character '\\t' that cannot "
                                           "start any token; indent with spaces, not tabs")], result.output
    assert params.read_text() == TABBED  # the file is left as it was


def test_an_unclosed_bracket_and_a_bad_override_name_where_they_are(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  tasks: [sst2\n")
    result = exitflow("prepare", "--params", str(params))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_lines(result.output)[0].startswith(f"error: {params}:3:1: YAML syntax error: expected ',' or ']'")
    params.write_text(GOOD)
    result = exitflow("prepare", "--params", str(params), "--set", "train.epochs=[1")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_lines(result.output)[0].startswith("error: override 'train.epochs=[1': YAML syntax error: expected")


def test_the_verbose_flag_shows_the_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(TABBED)
    result = exitflow("prepare", "--params", str(params), env={"EXITFLOW_VERBOSE": "1"})
    assert result.exit_code == 2 and "Traceback" in result.output and "ConfigError" in result.output
