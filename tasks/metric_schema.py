"""The one metric schema of exitflow's MLflow runs: every method and flow logs these keys.

A reviewer compares runs of different methods by sorting one column, so a key means the same
thing on every run that has it. The schema is the table ``KEYS`` (rendered, for the docs, by
``render_schema_markdown`` into ``docs/reference/metrics.md``) plus the functions that turn an
evaluation into schema keys:

- ``operating_metrics``: one operating point (dev-chosen threshold) -> ``dev_quality``,
  ``test_quality``, ``layer_speedup``, ``flops_speedup``, ``wallclock_speedup_bs<k>``;
- ``front_readings``: a criterion's sweep read at the target speed-ups on the dev-chosen front
  -> ``test_quality_at_{1.5,2,3}x`` (``models.tradeoff.dev_chosen_front`` + ``quality_at``, the
  comparison's reading: dev picks the points, test is read at the target test layer speed-up);
- ``curve_table`` / ``curve_steps``: a sweep ordered by speed-up (x increasing), for
  ``mlflow.log_table`` and for step metrics whose step is the speed-up in hundredths.

Quality is the task's metric in percent (higher is better); a speed-up is a ratio to the
full-depth model (x, > 1 is faster).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.tradeoff import dev_chosen_front, quality_at, target_label

TARGET_SPEEDUPS = (1.5, 2.0, 3.0)  # test layer speed-ups every front is read at (x)
NOTE = "mlflow.note.content"  # MLflow's run / experiment description tag
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own tag: the UI links it to the source
IDENTITY = ("method", "strategy", "criterion", "task", "seed")  # params of every run ("-" where none applies)
NOT_APPLICABLE = "-"
RECOMMENDED_ALIAS = "recommended"  # the default run's alias (the comparison's is ``compare.champion_alias``)


def at_key(target: float) -> str:
    """The metric key of test quality at test layer speed-up ``target``: ``test_quality_at_2x``."""
    return f"test_quality_at_{target_label(target)}"


def speedup_step(speedup: float) -> int:
    """A curve point's MLflow step: the speed-up in hundredths (2.46x -> 246)."""
    return int(round(100 * speedup))


@dataclass(frozen=True)
class Key:
    """One entry of the schema: a key, where MLflow shows it, its unit, its meaning, its runs."""

    name: str
    kind: str  # param | tag | metric | step metric | table | dataset
    unit: str
    meaning: str
    runs: str
    carried_by: tuple[str, ...] = ()  # the RUN_KINDS the flow tests check it on (tests/flows/mlflow_schema.py)

    def names(self) -> tuple[str, ...]:
        """The key names of this entry (``"a, b"`` -> ``("a", "b")``)."""
        return tuple(self.name.split(", "))


EVERY_RUN, PREPARED_TASK_RUN, LEARNABILITY_RUN = "every run", "prepared-task run", "learnability run"


_AT = ", ".join(at_key(t) for t in TARGET_SPEEDUPS)
KEYS: tuple[Key, ...] = (
    Key("method", "param", "-", "registered method (berxit, hashee, consistentee, past-future, leco, generation, "
        "learnability, compare, pipeline)", "every run", (EVERY_RUN,)),
    Key("strategy", "param", "-", "training objective of the multi-exit model (joint, alternating, weighted, single, ...); "
        "`-` where none applies", "every run", (EVERY_RUN,)),
    Key("criterion", "param", "-", "exit rule (entropy, maxprob, patience, lte, policy, hash, ...); `-` on runs that "
        "hold several", "every run", (EVERY_RUN,)),
    Key("task", "param", "-", "dataset task (sst2, ...; `-` on the learnability runs)", "every run", (EVERY_RUN,)),
    Key("seed", "param", "-", "training seed", "every run", (EVERY_RUN,)),
    Key("dev_quality", "metric", "%", "dev quality at the operating point (threshold chosen on dev: "
        "the fastest setting over the quality bar, else the best on dev; generation: quality = ROUGE-L x 100, bar "
        "`generate.rouge_target`, tag `operating_rule` says which)",
        "criterion runs of every method, generation included (not the learnability runs)"),
    Key("test_quality", "metric", "%", "test quality at the same operating point", "criterion runs, HashEE"),
    Key("layer_speedup", "metric", "x", "test layer speed-up at the operating point: layers of the full model / "
        "mean layers run", "criterion runs, HashEE"),
    Key("flops_speedup", "metric", "x", "test FLOPs speed-up at the operating point (counted FLOPs)",
        "criterion runs, HashEE"),
    Key("wallclock_speedup_bs<k>", "metric", "x", "measured wall-clock speed-up at batch size k (same process, "
        "interleaved with the full model); differs between machines", "criterion runs, HashEE"),
    Key(_AT, "metric", "%", "test quality read at that test layer speed-up on the dev-chosen front (the "
        "comparison's reading; absent beyond the front's reach): sort by these to compare methods", "criterion runs, "
        "HashEE, parents (best)"),
    Key("full_depth_dev_quality, full_depth_test_quality", "metric", "%", "the multi-exit model run to its last "
        "layer (no early exit)", "model runs and their criterion runs"),
    Key("reference_dev_quality, reference_test_quality", "metric", "%", "the single-exit fine-tuned backbone "
        "(HashEE's and the report's reference line); never the multi-exit model", "HashEE runs"),
    Key("curve_test_quality, curve_dev_quality", "step metric", "%", "the threshold sweep: step = that split's layer "
        "speed-up in hundredths, logged in increasing order; draw it against Step for the trade-off plot (its latest "
        "value is the fastest point, by construction)", "criterion runs"),
    Key("curve.json", "table", "-", "the sweep as rows ordered by test layer speed-up: threshold, dev/test quality, "
        "layer and FLOPs speed-ups, `on_dev_front`", "criterion runs"),
    Key("leaderboard.json", "table", "-", f"one row per run below the parent with {_AT}, layer speed-up and the "
        "identity params, best first at 2x", "every flow's parent run"),
    Key("best_" + at_key(2.0), "metric", "%", "the leaderboard's best test quality at 2x (and at the other "
        "targets); the tag `best_run_at_2x` names its run", "every flow's parent run"),
    Key("best_round, rounds_run, max_rounds, stop_reason", "metric / tag", "-", "ConsistentEE's rounds: the round "
        "shipped, the rounds that ran, why it stopped (tag `stop_reason`); per-round series `round_dev_quality`, "
        "`round_dev_layer_speedup`, `round_dev_objective` (step = round)", "ConsistentEE runs"),
    Key("memorized_layer_share_layer_<k>", "metric", "share", "share of training instances whose memorized layer is "
        "k (table `memorized_layer.json` holds the counts)", "ConsistentEE round runs"),
    Key("mlflow.source.git.commit, git_dirty", "tag", "-", "the code's commit; `true` when the work tree had "
        "uncommitted changes", "every run", (EVERY_RUN,)),
    Key("dvc.data_md5, dvc.lock_md5", "tag", "-", "DVC's content hash of `data/` (from `data.dvc`) and the md5 of "
        "the `dvc.lock` the run read (the pipeline retags it with the lock it wrote)", "every run"),
    Key("train / dev / test datasets", "dataset", "-", "the prepared splits (`mlflow.log_input`), digest = DVC's md5 "
        "of the split's Parquet file, source = its path relative to the project", "every run whose `task` is a "
        "prepared task", (PREPARED_TASK_RUN,)),
    Key("difficulty datasets", "dataset", "-", "the difficulty dataset a learnability study trains on "
        "(`difficulty-<study>`, context `train`), digest = DVC's hash of its folder (`<md5>.dir`, as `dvc.lock` "
        "records it), source = its path relative to the project (the human study: its source folder); the parent holds every "
        "built study's",
        "learnability runs (these carry the identity params, description, provenance tags and these datasets, "
        "none of the operating keys)", (LEARNABILITY_RUN,)),
    Key("mlflow.note.content", "tag", "-", "the run's description: what it is and how to read it", "every run, "
        "the experiment", (EVERY_RUN,)),
)


def operating_metrics(op: dict, timing: dict | None = None) -> dict[str, float]:
    """An operating point ``{"threshold", "dev": side, "test": side}`` (``models.operating``) and its
    wall-clock entries (``{"wallclock_speedup_bs<k>": x, ...}``) -> schema metrics."""
    out = {"dev_quality": op["dev"]["quality"], "test_quality": op["test"]["quality"],
           "layer_speedup": op["test"]["layer_speedup"], "flops_speedup": op["test"]["flops_speedup"]}
    out.update({k: float(v) for k, v in (timing or {}).items() if k.startswith("wallclock_speedup_bs")})
    return out


def front_readings(points: list[dict]) -> dict[str, float]:
    """A criterion's sweep points -> ``{test_quality_at_<t>x: quality}`` for every target the
    dev-chosen front reaches (``models.tradeoff.quality_at``)."""
    front = dev_chosen_front(points)
    readings = {at_key(t): quality_at(front, t) for t in TARGET_SPEEDUPS}
    return {k: v for k, v in readings.items() if v is not None}


def single_point_readings(test_quality: float, layer_speedup: float) -> dict[str, float]:
    """``front_readings`` of a method with one operating point (HashEE): its quality up to its speed-up."""
    return front_readings([{"dev": {"layer_speedup": layer_speedup, "quality": test_quality},
                            "test": {"layer_speedup": layer_speedup, "quality": test_quality}}])


def curve_table(points: list[dict]) -> dict[str, list]:
    """Sweep points as columns, rows ordered by test layer speed-up (x increasing), for ``mlflow.log_table``."""
    front = {id(p) for p in dev_chosen_front(points)}
    rows = sorted(points, key=lambda p: (p["test"]["layer_speedup"], p["test"]["quality"]))  # as ``curve_steps``
    return {"threshold": [p["test"].get("threshold", p["dev"].get("threshold")) for p in rows],
            "test_layer_speedup": [p["test"]["layer_speedup"] for p in rows],
            "test_quality": [p["test"]["quality"] for p in rows],
            "test_flops_speedup": [p["test"].get("flops_speedup") for p in rows],
            "dev_layer_speedup": [p["dev"]["layer_speedup"] for p in rows],
            "dev_quality": [p["dev"]["quality"] for p in rows],
            "on_dev_front": [id(p) in front for p in rows]}


def curve_steps(points: list[dict], split: str) -> list[tuple[int, float]]:
    """``(step, quality)`` of ``split``'s sweep, step = its layer speed-up in hundredths, increasing."""
    return sorted((speedup_step(p[split]["layer_speedup"]), p[split]["quality"]) for p in points)


def render_schema_markdown() -> str:
    """The schema as the Markdown page ``docs/reference/metrics.md`` (a test keeps them equal)."""
    lines = ["# MLflow metric schema", "",
             "Generated by `tasks.metric_schema.render_schema_markdown()`; do not edit by hand. Every method and "
             "flow logs these keys with this meaning, so one sort in an experiment's runs table compares methods "
             "(see [Reviewing experiments](../reviewing.md)).", "",
             f"Quality is the task's metric in percent; speed-ups are ratios to the full-depth model (x). Targets: "
             f"{', '.join(f'{t:g}x' for t in TARGET_SPEEDUPS)}. The operating point is the threshold chosen on "
             "dev; test numbers are only reported.", "",
             "| key | kind | unit | meaning | logged on |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{k.name}` | {k.kind} | {k.unit} | {k.meaning} | {k.runs} |" for k in KEYS]
    lines += ["", f"Registered model versions carry the tags {', '.join(f'`{t}`' for t in VERSION_TAGS)} and a "
              "description of the rule that chose them; the default run moves the alias "
              f"`{RECOMMENDED_ALIAS}` by the comparison's champion rule (higher full-depth dev quality than the "
              "holder's `dev_score`).", ""]
    return "\n".join(lines)


VERSION_TAGS = ("method", "strategy", "criterion", "threshold", "task", "seed", "dev_score", "dev_quality",
                "test_quality", "layer_speedup", "flops_speedup", at_key(2.0), "git_commit", "run_id")
