"""The method registry: every registration resolves, and the CLI, the comparison and the DVC
stage list are derived from it."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows import registry

ROOT = Path(__file__).resolve().parents[2]


def test_every_registration_names_functions_that_exist():
    methods = registry.load_methods()
    assert {"berxit", "hashee", "consistentee", "past-future", "leco", "static"} <= set(methods)
    for method in methods.values():
        names = [c.function for c in method.commands] + [n for n in (method.cell, method.variants) if n is not None]
        for name in names:
            assert callable(method.function(name)), f"{method.name}: {method.flows_module}.{name}"
        if method.model_module is not None:
            assert (ROOT / Path(*method.model_module.split("."))).with_suffix(".py").is_file()


def test_cli_lists_every_registered_command_once():
    from flows.cli import app

    names = [c.name for _, c in registry.commands()]
    assert len(names) == len(set(names))
    listed = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    for name in names:
        assert f" {name} " in listed, name
    options = CliRunner().invoke(app, ["leco", "--help"], terminal_width=200).output
    assert "--until" in options and "--task" in options and "--params" in options


def test_dvc_stages_are_the_registered_ones():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == registry.dvc_stages()


def test_comparison_methods_come_from_the_registry(tmp_path):
    from config.params import ConfigError, load_params

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"compare": {"static_layers": [1, 6]}}))
    every = registry.comparison_methods(load_params(tmp_path / "params.yaml"))
    names = [v.name for v in every]
    assert names[-2:] == ["static-1", "static-6"] and all(v.baseline for v in every[-2:])
    assert {"joint", "weighted", "two_stage", "alternating", "hashee", "consistentee", "past-future", "leco"} <= set(names)
    assert "single" not in names  # the static line and HashEE's reference, not a method of its own
    assert not next(v for v in every if v.name == "leco").regression

    chosen = registry.comparison_methods(load_params(tmp_path / "params.yaml", ["compare.methods=[hashee, joint]"]))
    assert [v.name for v in chosen] == ["hashee", "joint", "static-1", "static-6"]  # baselines always in the grid
    with pytest.raises(ConfigError, match=r"compare.methods: unknown \['nope'\]"):
        registry.comparison_methods(load_params(tmp_path / "params.yaml", ["compare.methods=[nope]"]))
    with pytest.raises(ConfigError, match=r"unknown \['static-1'\]"):  # a baseline is not chosen by name
        registry.comparison_methods(load_params(tmp_path / "params.yaml", ["compare.methods=[static-1]"]))


def test_a_name_registers_once():
    method = registry.Method(name="twice", summary="", flows_module=__name__)
    registry.register(method)
    try:
        registry.register(method)  # the same registration again is fine (a re-imported module)
        with pytest.raises(ValueError, match="registered twice"):
            registry.register(registry.Method(name="twice", summary="other", flows_module=__name__))
    finally:
        registry.METHODS.pop("twice")
