"""The generated documentation (flows/docs.py): the committed reference pages are what the code
generates now, and the ``docs`` DVC stage lists what the renderer reads and writes."""

from pathlib import Path

import pytest
import yaml

from config.params import load_params
from flows.docs import (
    REFERENCE_DIR,
    REFERENCE_PAGES,
    RESULTS_DIR,
    cli_reference,
    params_reference,
)
from flows.layout import Layout
from tasks.reports.site import BENCHMARKS_DIR, IMAGE_DIR, results_pages

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(REFERENCE_PAGES))
def test_committed_reference_pages_are_current(name):
    committed = ROOT / REFERENCE_DIR / name
    assert committed.exists() and committed.read_text() == REFERENCE_PAGES[name](), (
        f"{REFERENCE_DIR / name} is out of date with the code: regenerate it with `exitflow docs` "
        "(python -m flows.cli docs) and commit it")


def test_cli_reference_has_every_command_and_option():
    from typer.main import get_command

    from flows.cli import app

    text = cli_reference()
    group = get_command(app)
    assert set(group.commands) >= {"run", "report", "docs", "leco", "hashee", "compare"}
    for name, command in group.commands.items():
        section = text.split(f"## `exitflow {name}`\n", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            assert f"`{param.opts[0]}`" in section, (name, param.opts)
    assert "| `--until` | str | `compare` |" in text  # an option with its default


def test_params_reference_has_every_section_and_key():
    from config.params import Params

    text = params_reference()
    for name, info in Params.model_fields.items():
        assert f"| `{name}` |" in text
        if hasattr(info.annotation, "model_fields"):
            body = text.split(f"## `{name}`\n", 1)[1].split("\n## ", 1)[0]
            assert all(f"| `{key}` |" in body for key in info.annotation.model_fields), name
    assert "| `max_length` | `int` | `128` | (>= 8, <= 512) |" in text
    assert "depth penalty per layer in the reward" in text  # a description from the key's line comment


def test_docs_stage_reads_what_the_renderer_reads_and_writes_its_pages():
    params = load_params(ROOT / "params.yaml")
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["docs"]
    expand = lambda p: p.replace("${train.task}", params.train.task).replace("${seed}", str(params.seed))  # noqa: E731
    deps = {expand(d) for d in stage["deps"]}
    outs = {next(iter(o)) for o in stage["outs"]}
    assert all(o[next(iter(o))] == {"cache": False} for o in stage["outs"])

    layout = Layout.from_params(params)
    pages = results_pages(layout, params.path("."), params.past_future.tasks, params.leco.tasks, params.train.strategies)
    read = {s for p in pages for s in p.sources} | {i for p in pages for s in p.sections for i in s.images}
    evaluations = {Path(layout.evaluate(s) / "metrics.json").relative_to(ROOT).as_posix() for s in params.train.strategies}
    assert evaluations <= read  # each strategy's layer-wise scores

    def covered(path: str, folders: set[str]) -> bool:  # the path, or a file inside one of the folders
        return path in folders or any(path.startswith(f + "/") for f in folders)

    for path in read:  # each file the renderer reads is a dependency (or inside one)
        assert covered(path, deps | {BENCHMARKS_DIR.as_posix()}), path
    for dep in deps:  # and each artifact dependency is read (a folder: something inside it)
        if dep.startswith("artifacts/"):
            assert any(covered(path, {dep}) for path in read), dep
    expected = {f"{RESULTS_DIR.as_posix()}/{p.name}.md" for p in pages} | {f"{RESULTS_DIR.as_posix()}/index.md"}
    expected |= {f"{RESULTS_DIR.as_posix()}/{IMAGE_DIR}"} | {f"{REFERENCE_DIR.as_posix()}/{n}" for n in REFERENCE_PAGES}
    assert outs == expected
    assert stage["cmd"] == "python -m flows.cli docs"


def test_docs_command_renders_an_empty_project_and_a_damaged_file_is_one_error_line(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    (tmp_path / "params.yaml").write_text("seed: 7\n")
    done = CliRunner().invoke(app, ["docs", "--params", str(tmp_path / "params.yaml")])
    assert done.exit_code == 0, done.output
    page = (tmp_path / "docs/results/learnability.md").read_text()
    assert "Not generated yet: run `exitflow learnability`, then `exitflow docs`" in page
    assert (tmp_path / "docs/reference/cli.md").read_text() == cli_reference()

    summary = tmp_path / "artifacts/generate/seed-7/report/summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text("{")
    failed = CliRunner().invoke(app, ["docs", "--params", str(tmp_path / "params.yaml")])
    assert failed.exit_code == 2
    assert failed.output.startswith("error: artifacts/generate/seed-7/report/summary.json: not valid JSON")
    assert len(failed.output.strip().splitlines()) == 1 and "Traceback" not in failed.output
