"""One artifact layout: every path ``dvc.yaml`` declares is a ``Layout`` folder or a file in one,
every ``Layout`` folder a stage writes or reads is declared, and folders are keyed by task and seed."""

import re
from pathlib import Path

import pytest
import yaml

from flows.layout import Layout
from models.objectives import OBJECTIVES
from config.params import load_params

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ("snli_model", "sentence", "token")


def expand(text: str, params, item) -> str:
    """DVC's templating for the variables ``dvc.yaml`` uses; any other variable fails the test."""
    values = {"train.task": params.train.task, "seed": str(params.seed), "item": str(item)}
    values["past_future.tasks"] = str(params.past_future.tasks)
    values["leco.tasks"] = str(params.leco.tasks)
    return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], text)


def dvc_stages(params) -> dict[str, dict[str, list[Path]]]:
    """``{stage (name@item for foreach stages): {"deps": [...], "outs": [...]}}``, paths expanded and
    absolute; ``outs`` holds outs, metrics and plots."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    expanded = {}
    for name, stage in stages.items():
        if "foreach" in stage:
            lists = {"${train.strategies}": params.train.strategies, "${past_future.tasks}": params.past_future.tasks,
                     "${leco.tasks}": params.leco.tasks}
            assert stage["foreach"] in lists
            body, items = stage["do"], lists[stage["foreach"]]
        else:
            body, items = stage, [None]
        for item in items:
            paths = {kind: [ROOT / expand(e if isinstance(e, str) else next(iter(e)), params, item) for e in body.get(kind, [])]
                     for kind in ("deps", "outs", "metrics", "plots")}
            expanded[name if item is None else f"{name}@{item}"] = {
                "deps": paths["deps"], "outs": paths["outs"] + paths["metrics"] + paths["plots"]}
    return expanded


def stage_folders(layout: Layout, stage: str) -> dict[str, list[Path]]:
    """The ``Layout`` folders each stage's flow reads (``deps``) and writes (``outs``)."""
    name, _, item = stage.partition("@")
    hashee, cee = layout.hashee("default"), layout.consistentee("default")
    item_task = Layout(layout.artifacts, layout.data, item, layout.seed)  # past_future runs per task
    return {
        "train": {"deps": [layout.task_data], "outs": [layout.train(item)]},
        "evaluate": {"deps": [layout.task_data, layout.train(item)], "outs": [layout.evaluate(item)]},
        "hashee": {"deps": [layout.task_data], "outs": [hashee.table, hashee.train, hashee.evaluate, layout.reference]},
        "report": {"deps": [layout.evaluations, hashee.evaluate, cee.evaluate, layout.past_future_default.evaluate],
                   "outs": [layout.report]},
        "past_future_default": {"deps": [layout.task_data],
                                "outs": [layout.past_future_default.train, layout.past_future_default.evaluate]},
        "consistentee": {"deps": [layout.task_data, layout.evaluations],
                         "outs": [cee.init, cee.rounds, cee.hardness, cee.evaluate, cee.report]},
        "learnability": {"deps": [layout.task_data, layout.train("joint")],
                         "outs": [*(layout.learnability_dataset(s) for s in STUDIES), layout.token_annotator,
                                  layout.human_difficulty, layout.learnability_report]},
        "past_future": {"deps": [item_task.task_data], "outs": [item_task.past_future_models, item_task.past_future_report]},
        "leco_search": {"deps": [item_task.task_data], "outs": [item_task.leco_search]},
        "leco_derive": {"deps": [item_task.leco_search], "outs": [item_task.leco_derive]},
        "leco_train": {"deps": [item_task.task_data, item_task.leco_derive], "outs": [item_task.leco_model.train]},
        "generate": {"deps": [Layout(layout.artifacts, layout.data, source, layout.seed).task_data
                              for source in ("sst2", "snli", "mrpc")],  # generate.prompts.sources' and distill.sources' defaults
                     "outs": [layout.generate / step
                              for step in ("prompts", "responses", "distill-data", "distill", "exits", "evaluate", "report")]},
        "compare": {"deps": [Layout(layout.artifacts, layout.data, task, layout.seed).task_data
                             for task in ("sst2", "mrpc", "stsb")],  # compare.tasks' defaults
                    "outs": [layout.compare / "quick" / "report"]},
        "compare_standard": {"deps": [Layout(layout.artifacts, layout.data, task, layout.seed).task_data
                                      for task in ("sst2", "mrpc", "stsb")],
                             "outs": [layout.compare / "standard" / "report"]},
        "leco_compare": {"deps": [item_task.task_data, item_task.leco_model.train],
                         "outs": [item_task.leco_model.evaluate, item_task.leco_baselines, item_task.leco_report]},
        "docs": {"deps": [layout.report, layout.evaluations, hashee.evaluate, cee.rounds, cee.report, cee.hardness, layout.generate / "report",
                          layout.generate / "exits",
                          layout.learnability_report,
                          *(layout.compare / profile for profile in ("standard", "quick")),  # report/ and timing.json
                          *(Layout(layout.artifacts, layout.data, task, layout.seed).past_future_report for task in ("sst2", "mrpc")),
                          *(folder for task in ("sst2", "mrpc")  # past_future.tasks' and leco.tasks' defaults
                            for folder in (Layout(layout.artifacts, layout.data, task, layout.seed).leco_report,
                                           Layout(layout.artifacts, layout.data, task, layout.seed).leco_derive,
                                           Layout(layout.artifacts, layout.data, task, layout.seed).leco_search))],
                 "outs": []},  # docs/ pages, not artifacts
    }[name]


def in_folder(path: Path, folder: Path) -> bool:
    """``path`` is the folder itself or a file (or subfolder) directly in it."""
    return path == folder or path.parent == folder


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def test_every_dvc_path_is_a_layout_folder_and_every_stage_folder_is_declared(params):
    layout = Layout.from_params(params)
    stages = dvc_stages(params)
    assert {s.partition("@")[0] for s in stages} == {"train", "evaluate", "hashee", "report", "consistentee", "learnability",
                                                     "past_future", "past_future_default", "leco_search", "leco_derive",
                                                     "leco_train", "leco_compare", "generate", "compare", "compare_standard", "docs"}
    assert sum(s.startswith("past_future@") for s in stages) == len(params.past_future.tasks) > 0
    for step in ("search", "derive", "train", "compare"):
        assert sum(s.startswith(f"leco_{step}@") for s in stages) == len(params.leco.tasks) > 0
    assert sum(s.startswith("train@") for s in stages) == len(params.train.strategies) > 0
    artifact_roots = (layout.artifacts, layout.data)
    for stage, declared in stages.items():
        folders = stage_folders(layout, stage)
        for kind in ("deps", "outs"):
            for path in declared[kind]:
                if not any(path.is_relative_to(r) for r in artifact_roots):
                    assert (kind == "deps" and path.exists()) or (stage == "docs" and path.is_relative_to(ROOT / "docs")), \
                        f"{stage}: {path} is neither an artifact nor code"
                    continue
                assert any(in_folder(path, f) for f in folders[kind]), f"{stage} {kind}: {path} is no Layout path"
            for folder in folders[kind]:
                assert any(in_folder(path, folder) for path in declared[kind]), f"{stage} {kind}: {folder} not declared"
    # each ConsistentEE round writes under the declared rounds folder
    cee = layout.consistentee("default")
    for r in range(1, params.consistentee.rounds + 1):
        assert cee.memorized(r).is_relative_to(cee.rounds) and cee.train(r).is_relative_to(cee.rounds)


def test_paths_are_keyed_by_task_and_seed_under_the_artifacts_dir(params):
    layout = Layout.from_params(params)
    assert layout.base == ROOT / "artifacts" / params.train.task / f"seed-{params.seed}"
    assert layout.train("joint") == layout.base / "train" / "joint"
    assert layout.reference == layout.base / "reference" / "single-exit"
    assert layout.task_data == ROOT / "data" / params.train.task
    assert layout.learnability_shared == ROOT / "artifacts" / "learnability" / f"seed-{params.seed}"
    moved = Layout.from_params(load_params(ROOT / "params.yaml", ["artifacts_dir=/elsewhere/out", "train.task=mrpc", "seed=7"]))
    assert moved.train("joint") == Path("/elsewhere/out/mrpc/seed-7/train/joint")


def task_folders(layout: Layout) -> list[Path]:
    """Every folder a run of ``layout.task`` writes, as the flows ask for them."""
    hashee, study, cee, ablation = (layout.hashee("default"), layout.hashee("study/x"), layout.consistentee("default"),
                                    layout.consistentee("ablation/x"))
    return [*(f(s) for s in OBJECTIVES for f in (layout.train, layout.evaluate)), layout.report, layout.reference,
            hashee.table, hashee.train, hashee.evaluate, study.table, study.train, study.evaluate, layout.hashee_study,
            cee.init, cee.memorized(1), cee.train(1), cee.hardness, cee.evaluate, cee.report, ablation.train(1),
            ablation.evaluate, layout.consistentee_ablation, layout.learnability_dataset("sentence"),
            layout.learnability_predictor("sentence", "bert"), layout.learnability_report,
            layout.past_future("concat-future").train, layout.past_future("local-joint").evaluate, layout.past_future_report,
            layout.past_future_default.train, layout.past_future_default.evaluate, layout.leco_search, layout.leco_derive,
            layout.leco_model.train, layout.leco_model.evaluate, layout.leco_baseline("jt-mha").train, layout.leco_report]


def shared_folders(layout: Layout) -> list[Path]:
    return [layout.token_cache, layout.token_annotator, layout.human_difficulty,
            *(layout.learnability_dataset(s) for s in ("snli_model", "token")),
            *(layout.learnability_predictor(s, "bert") for s in ("snli_model", "token"))]


def overlaps(a: list[Path], b: list[Path]) -> list[tuple[Path, Path]]:
    return [(x, y) for x in a for y in b if x.is_relative_to(y) or y.is_relative_to(x)]


def test_a_second_task_or_seed_writes_beside_the_first():
    sst2 = Layout(Path("/p/artifacts"), Path("/p/data"), "sst2", 42)
    for other in (Layout(Path("/p/artifacts"), Path("/p/data"), "mrpc", 42), Layout(Path("/p/artifacts"), Path("/p/data"), "sst2", 43)):
        assert overlaps(task_folders(sst2), task_folders(other)) == []
    # the studies that read no train.task data are shared by every task, and keyed by seed
    assert shared_folders(sst2) == shared_folders(Layout(Path("/p/artifacts"), Path("/p/data"), "mrpc", 42))
    assert overlaps(shared_folders(sst2)[1:], shared_folders(Layout(Path("/p/artifacts"), Path("/p/data"), "sst2", 43))[1:]) == []
    # a task named like a shared folder still gets folders of its own
    for task in ("learnability", "cache", "tokens"):
        named = Layout(Path("/p/artifacts"), Path("/p/data"), task, 42)
        assert overlaps(task_folders(named), shared_folders(named)) == []


def test_no_strategy_name_reaches_the_reference_model():
    layout = Layout(Path("/p/artifacts"), Path("/p/data"), "sst2", 42)
    for strategy in (*OBJECTIVES, "single", "reference", "single-exit"):
        assert overlaps([layout.train(strategy), layout.evaluate(strategy)], [layout.reference]) == []
    folders = task_folders(layout)
    assert len(set(folders)) == len(folders)
    with pytest.raises(ValueError, match="learnability study"):
        layout.learnability_dataset("human")
