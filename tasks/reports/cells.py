"""The comparison's typed cells: what a method's cell runner returns (``CellSummary``), what a grid
unit returns (``UnitResult``) and one finished (task, method, seed) of the grid (``ComparisonCell``).

Each writes exactly the JSON the comparison wrote before it was typed (``cell.json`` in MLflow,
the ``cells`` of ``compare.json``, ``timing.json``): ``to_json`` keeps every key and its order,
``from_json`` reads it back. Quality is in percent, speed-ups are ratios to the full-depth model.

A static baseline (the first k layers fine-tuned as a single-exit model) is the method named
``static-<k>``: ``is_static`` is the one test for "is this a static baseline" the comparison makes
(``ComparisonCell.is_static`` for a cell), ``static_depth`` reads k from the name.
"""

from __future__ import annotations

from dataclasses import dataclass

STATIC_PREFIX = "static-"
STATUSES = ("ok", "failed", "n/a", "pending")


def static_method(k: int) -> str:
    """The method name of the static baseline of depth ``k``: ``static-<k>``."""
    return f"{STATIC_PREFIX}{k}"


def is_static(method: str) -> bool:
    """Whether ``method`` names a static baseline (``static-<k>``)."""
    return method.startswith(STATIC_PREFIX)


def static_depth(method: str) -> int | None:
    """k for a static baseline's method name ``static-<k>``; None for any other method."""
    return int(method[len(STATIC_PREFIX):]) if method.startswith(STATIC_PREFIX) else None


@dataclass(frozen=True)
class TimedPoint:
    """A criterion's dev operating point, timed at the comparison's batch size.

    Attributes:
        threshold: the criterion's threshold chosen on dev; None for a single-point model
            (HashEE, a static baseline).
        test_quality: test quality at that threshold.
        layer_speedup: layer speed-up of the timed (test) rows, so it compares with wall-clock.
        flops_speedup: test FLOPs speed-up.
        wallclock_speedup: measured throughput ratio to the full-depth model, same process.
        dev_quality: dev quality at the threshold; None for a single-point model.
        dev_layer_speedup: dev layer speed-up at the threshold; None for a single-point model
            (the hash or the depth fixes its speed-up).
    """

    threshold: float | None
    test_quality: float
    layer_speedup: float
    flops_speedup: float
    wallclock_speedup: float
    dev_quality: float | None = None
    dev_layer_speedup: float | None = None

    @property
    def dev_speedup(self) -> float:
        """The layer speed-up the comparison ranks criteria by: dev's, else the timed rows'."""
        return self.layer_speedup if self.dev_layer_speedup is None else self.dev_layer_speedup

    def to_json(self) -> dict:
        """``{"threshold", "test_quality", ["dev_quality", "dev_layer_speedup",] "layer_speedup",
        "flops_speedup", "wallclock_speedup"}``; the dev keys only when known."""
        dev = {} if self.dev_quality is None else {"dev_quality": self.dev_quality, "dev_layer_speedup": self.dev_layer_speedup}
        return {"threshold": self.threshold, "test_quality": self.test_quality, **dev, "layer_speedup": self.layer_speedup,
                "flops_speedup": self.flops_speedup, "wallclock_speedup": self.wallclock_speedup}

    @classmethod
    def from_json(cls, data: dict) -> TimedPoint:
        """The point ``to_json`` wrote."""
        return cls(data["threshold"], data["test_quality"], data["layer_speedup"], data["flops_speedup"],
                   data["wallclock_speedup"], data.get("dev_quality"), data.get("dev_layer_speedup"))


@dataclass(frozen=True)
class CellSummary:
    """What a method's comparison cell (``flows.registry``) returns for one trained model.

    Attributes:
        metric: the task's quality metric (``accuracy``, ...).
        num_layers: L, the backbone's depth.
        full_dev, full_test: quality of the model at its deepest exit, dev and test.
        series: criterion -> every swept threshold as a sweep point ``{"dev": side, "test": side}``,
            ``side = {"threshold", "quality", "layer_speedup", "flops_speedup"}``.
        timed: criterion -> its dev operating point, timed (criteria without a timing left out).
        checkpoint: the trained model's folder.
        test_rows: its per-row test predictions at every sweep point (``tasks.row_predictions``,
            keys ``<criterion>:<index into series>``); None when the evaluation kept none.
        at_chance: whether the full-depth model is at chance level on dev (``models.metrics.chance_check``);
            None when not checked.
    """

    metric: str
    num_layers: int
    full_dev: float
    full_test: float
    series: dict[str, list[dict]]
    timed: dict[str, TimedPoint]
    checkpoint: str
    test_rows: str | None = None
    at_chance: bool | None = None

    @property
    def points(self) -> list[dict]:
        """The union of ``series``, each sweep point tagged with its ``criterion`` and its ``index`` in it."""
        return [{**p, "criterion": c, "index": i} for c, pts in sorted(self.series.items()) for i, p in enumerate(pts)]

    def to_json(self) -> dict:
        """``{"metric", "num_layers", "full": {"dev", "test"}, "series", "timed", "checkpoint"[, "test_rows"][, "at_chance"]}``
        (the last two only when known)."""
        extra = {k: v for k, v in (("test_rows", self.test_rows), ("at_chance", self.at_chance)) if v is not None}
        return {"metric": self.metric, "num_layers": self.num_layers, "full": {"dev": self.full_dev, "test": self.full_test},
                "series": self.series, "timed": {k: t.to_json() for k, t in self.timed.items()},
                "checkpoint": self.checkpoint, **extra}

    @classmethod
    def from_json(cls, data: dict) -> CellSummary:
        """The summary ``to_json`` wrote (extra keys, as a cell's, are ignored)."""
        return cls(data["metric"], data["num_layers"], data["full"]["dev"], data["full"]["test"], data["series"],
                   {k: TimedPoint.from_json(t) for k, t in data["timed"].items()}, data["checkpoint"],
                   data.get("test_rows"), data.get("at_chance"))


@dataclass(frozen=True)
class UnitResult:
    """One grid unit (task, method, seed, learning rate): its summary, or the error that stopped it,
    and its seconds (cache hits included)."""

    summary: CellSummary | None
    error: str | None
    seconds: float


@dataclass(frozen=True)
class ComparisonCell:
    """One (task, method, seed) of the comparison, at the learning rate chosen for (task, method).

    Attributes:
        task, method, seed: the cell; ``method`` is a registered method or ``static-<k>``.
        status: ``ok``, ``failed`` (no unit at the chosen rate trained), ``n/a`` (the method
            cannot do the task) or ``pending`` (not run yet: a budget stopped the grid before it).
        lr: the learning rate chosen on dev for (task, method); None when none trained.
        lr_scores: each tried rate (``f"{lr:g}"``) -> full-depth dev quality, None where it failed.
        seconds: wall time of all its units; None in the report, which keeps no run times.
        error: why it failed or is n/a; None when ok.
        summary: the chosen unit's ``CellSummary`` when ok.
        dev_score: the score a champion is chosen on (full-depth dev quality) when ok.
    """

    task: str
    method: str
    seed: int
    status: str
    lr: float | None
    lr_scores: dict[str, float | None]
    seconds: float | None = None
    error: str | None = None
    summary: CellSummary | None = None
    dev_score: float | None = None

    @property
    def is_static(self) -> bool:
        """Whether the cell is a static baseline (``static-<k>``)."""
        return is_static(self.method)

    @property
    def static_layers(self) -> int | None:
        """k of a static baseline ``static-<k>``; None for a method."""
        return static_depth(self.method)

    @property
    def kind(self) -> str:
        """``static`` or ``early-exit``, as the JSON names it."""
        return "static" if self.is_static else "early-exit"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def metric(self) -> str | None:
        return None if self.summary is None else self.summary.metric

    @property
    def points(self) -> list[dict]:
        """Every sweep point of the cell, tagged with its criterion (none unless ok)."""
        return [] if self.summary is None else self.summary.points

    @property
    def timed(self) -> list[tuple[str, TimedPoint]]:
        """``(criterion, timed point)`` pairs by criterion (none unless ok)."""
        return [] if self.summary is None else sorted(self.summary.timed.items())

    def to_json(self) -> dict:
        """The cell as ``cell.json`` and ``compare.json`` hold it, keys in their historical order."""
        head = {"task": self.task, "method": self.method, "seed": self.seed, "kind": self.kind}
        seconds = {} if self.seconds is None else {"seconds": self.seconds}
        if self.status in ("n/a", "pending"):
            return {**head, "status": self.status, **seconds, "error": self.error, "lr": self.lr, "lr_scores": self.lr_scores}
        head = {**head, **seconds, "lr_scores": self.lr_scores}
        if self.status == "failed":
            return {**head, "status": self.status, "error": self.error, "lr": self.lr}
        return {**head, **self.summary.to_json(), "status": self.status, "error": None, "lr": self.lr,
                "dev_score": self.dev_score}

    @classmethod
    def from_json(cls, data: dict) -> ComparisonCell:
        """The cell ``to_json`` wrote."""
        if data["status"] not in STATUSES:
            raise ValueError(f"cell {data['task']}/{data['method']}/{data['seed']}: status {data['status']!r}, not one of {STATUSES}")
        ok = data["status"] == "ok"
        return cls(data["task"], data["method"], data["seed"], data["status"], data.get("lr"), data.get("lr_scores", {}),
                   data.get("seconds"), data.get("error"), CellSummary.from_json(data) if ok else None,
                   data.get("dev_score") if ok else None)
