"""params.yaml loads into the typed schema; bad values name their key."""

from pathlib import Path

import pytest

from config.params import ConfigError, Params, load_params

ROOT = Path(__file__).resolve().parents[2]


def test_repository_params_and_every_profile_validate():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.train.strategies == ["joint", "alternating"]
    profiles = list(params.profiles)
    assert profiles == ["full", "standard", "quick"]  # discovered, counted: a new profile must be added here on purpose
    full = load_params(ROOT / "params.yaml", profile="full")
    assert full.train.subsample.train is None and len(full.compare.seeds) == 3  # every row, 3 seeds
    quick = load_params(ROOT / "params.yaml", profile="quick")
    assert quick.train.subsample.train is not None and len(quick.compare.seeds) == 1
    assert set(quick.compare.tasks) == {"sst2", "mrpc", "stsb"} and quick.compare.methods == ["all"]
    # standard: the default run's budget (what `exitflow run` trains), 3 seeds, a two-point lr grid
    default, standard = load_params(ROOT / "params.yaml"), load_params(ROOT / "params.yaml", profile="standard")
    assert standard.train.subsample == default.train.subsample and standard.train.subsample.train == 4000
    assert standard.train.subsample.dev is None and standard.train.subsample.test is None
    assert standard.train.epochs == default.train.epochs == 2 and standard.backbone == default.backbone
    assert standard.compare.seeds == [42, 43, 44] and len(standard.compare.lr_grid) == 2
    assert standard.compare.tasks == ["sst2", "mrpc", "stsb"]


def test_paths_resolve_against_the_params_file(tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text("data: {out_dir: mydata}\n")
    monkeypatch.chdir("/")
    assert load_params(tmp_path / "p.yaml").path("mydata") == tmp_path / "mydata"


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", r"train.epochs: Input should be greater than or equal to 1"),
    ("train.strategies=[joint, sideways]", r"train.strategies: .*unknown strategy \['sideways'\]; choose from joint, weighted, two_stage, alternating, single"),
    ("evaluate.criteria=[entropy, vibes]", r"evaluate.criteria: .*choose from cobee, entropy, lte, maxprob, patience, policy, static"),
    ("train.head=cnn", r"train.head: .*choose one of leco, linear, mha, past_future, pooler"),
    ("train.lr=fast", r"train.lr: Input should be a valid number"),
    ("train.colour=blue", r"train.colour: Extra inputs are not permitted"),
    ("consistentee.alpha=-0.1", r"consistentee.alpha: Input should be greater than or equal to 0"),
    ("consistentee.copies=0", r"consistentee.copies: Input should be greater than or equal to 1"),
    ("consistentee.tau=1.0", r"consistentee.tau: Input should be less than 1"),
    ("consistentee.tau=0", r"consistentee.tau: Input should be greater than 0"),
    ("consistentee.reward=greedy", r"consistentee.reward: Input should be 'hardness' or 'vanilla'"),
    ("consistentee.ablation_alphas=[0.1, -1]", r"consistentee.ablation_alphas: .*alphas >= 0"),
    ("compare.budget=abc", r"compare.budget: .*'abc' is not a duration; write it like 170m, 2h30m or 90s"),
    ("compare.budget=170", r"compare.budget: .*170 is not a duration"),
    ("compare.budget=0m", r"compare.budget: .*must be longer than 0"),
    ("compare.seeds=[42, 43, 42]", r"compare.seeds: .*42 listed more than once"),
    ("compare.lr_grid=[]", r"compare.lr_grid: List should have at least 1 item"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_params(ROOT / "params.yaml", [override])


def test_budget_durations():
    from config.params import duration_seconds

    assert [duration_seconds(t) for t in ("170m", "2h30m", "90s", "1.5h")] == [10200, 9000, 90, 5400]
    for bad in ("", "m", "10", "10x", "1h1h", "-5m", "5 m"):
        with pytest.raises(ValueError):
            duration_seconds(bad)


def test_unknown_profile_and_malformed_override():
    with pytest.raises(ConfigError, match="unknown profile 'huge'; defined: full"):
        load_params(ROOT / "params.yaml", profile="huge")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_params(ROOT / "params.yaml", ["train.epochs"])
