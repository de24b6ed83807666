"""The documentation: the README stays short and starts with the two set-up commands, and the
MkDocs site in docs/ builds with ``--strict`` (no broken link or anchor, no page missing from
the nav or left out of it, no warning).

The results pages (docs/results/), the reference pages (docs/reference/) and docs/reviewing.md
are generated from the artifacts and the code; this test only needs them to exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 250
SETUP_LINES = 40  # the set-up commands must be on the README's first screen

# every method page and the results page it must link (README -> method page -> results)
METHOD_RESULTS = {
    "berxit.md": "default-run.md",
    "hashee.md": "hashee.md",
    "consistentee.md": "consistentee.md",
    "past-future.md": "past-future.md",
    "leco.md": "leco.md",
    "generation.md": "generation.md",
    "self-speculative.md": "generation.md",
    "learnability.md": "learnability.md",
    "comparison.md": "comparison.md",
    "comparison-statistics.md": "comparison.md",
}


def _nav_pages(node) -> list[str]:
    """Every page path in a MkDocs ``nav`` (nested lists of ``{title: path or list}`` or paths)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    raise AssertionError(f"mkdocs.yml: nav entry of unexpected type: {node!r}")


def _config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _links(markdown: str) -> set[str]:
    """Targets of the Markdown links ``[text](target)`` in ``markdown``, anchors stripped."""
    return {target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", markdown)}


def test_readme_is_short_and_starts_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, at most {README_MAX_LINES}"
    first_screen = lines[:SETUP_LINES]
    main_job = "bash scripts/bootstrap.sh && .venv/bin/exitflow run"
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]  # what CI runs
    assert ci_command == "bash scripts/bootstrap.sh && .venv/bin/python -m pytest"
    for command in (main_job, ci_command):
        assert command in first_screen, f"README.md: {command!r} not on one of its first {SETUP_LINES} lines"
    assert ".venv/bin/mkdocs serve" in lines, "README.md must say how to serve the docs locally"


def test_readme_reaches_every_method_and_its_results():
    links = _links((ROOT / "README.md").read_text())
    for page, results in METHOD_RESULTS.items():
        assert f"docs/methods/{page}" in links, f"README.md does not link docs/methods/{page}"
        assert f"docs/results/{results}" in links, f"README.md does not link docs/results/{results}"
    assert "docs/results/index.md" in links
    # mkdocs checks the site's links; the README's own links are checked here
    broken = sorted(link for link in links if "://" not in link and not (ROOT / link).exists())
    assert not broken, f"README.md links files that do not exist: {broken}"


def test_every_nav_page_exists_and_the_nav_is_offline():
    config = _config()
    pages = _nav_pages(config["nav"])
    assert len(pages) == len(set(pages)), "mkdocs.yml: a page is listed twice in nav"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml nav lists pages that do not exist under docs/: {missing}"
    # plugins that fetch at build time (social cards, privacy) would break the offline build
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config.get("plugins", [])]
    assert set(plugins) <= {"search"}, f"mkdocs.yml: plugins beyond search need an offline check: {plugins}"
    assert config["theme"].get("font") is False, "mkdocs.yml: theme.font must be false (no web fonts)"


def test_every_method_page_links_its_results_page():
    pages = set(_nav_pages(_config()["nav"]))
    method_pages = sorted(p.name for p in (DOCS / "methods").glob("*.md"))
    assert method_pages == sorted(METHOD_RESULTS), "docs/methods/ and METHOD_RESULTS in this test differ"
    for page, results in METHOD_RESULTS.items():
        assert f"methods/{page}" in pages, f"docs/methods/{page} is not in the nav"
        assert f"results/{results}" in pages, f"docs/results/{results} is not in the nav"
        links = _links((DOCS / "methods" / page).read_text())
        assert f"../results/{results}" in links, f"docs/methods/{page} does not link ../results/{results}"


def test_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    for page in _nav_pages(_config()["nav"]):
        built = page[: -len(".md")]
        built = built[: -len("index")] if built.endswith("index") else built + "/"
        assert (tmp_path / "site" / built / "index.html").is_file(), f"{page} was not built"
