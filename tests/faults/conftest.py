"""Faults done for real on tiny runs: the fixtures of ``tests/flows`` (a tiny backbone, tiny data,
a project folder, one Prefect test server per session), and the CLI as a user meets it."""

from typer.testing import CliRunner

from tests.flows.conftest import prefect_harness, project  # noqa: F401 (fixtures)


def exitflow(*args: str, env: dict | None = None):
    """``exitflow *args`` in this process (typer's CliRunner), tracebacks off: its ``Result``."""
    from flows.cli import app

    return CliRunner().invoke(app, list(args), env={"EXITFLOW_VERBOSE": "", **(env or {})})


def error_lines(output: str) -> list[str]:
    """The ``error:`` lines of a command's output."""
    return [line for line in output.splitlines() if line.startswith("error:")]
