"""Wall-clock throughput, measured side by side in one process (medians over repeats).

Each repeat times every method once over the same pre-built batches, in turn, so the full
model and the early-exit methods see the same machine state.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable

import torch

from models.criteria import ExitCriterion
from models.exiting import MultiExitModel

Runner = Callable[[dict[str, torch.Tensor]], object]


def exit_runner(model: MultiExitModel, criterion: ExitCriterion | None) -> Runner:
    """Real early-exit inference of ``model`` with ``criterion`` (``None`` = full model) on one batch."""
    return lambda b: model.early_exit(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), criterion)


def full_model_runner(model: MultiExitModel) -> Runner:
    """The plain full model (all layers, all tokens, last head), whatever exits ``model`` adds."""
    return lambda b: MultiExitModel.early_exit(model, b["input_ids"], b["attention_mask"], b.get("token_type_ids"), None)


@torch.no_grad()
def measure_throughput(batches: list[dict[str, torch.Tensor]], methods: dict[str, Runner], repeats: int = 3,
                       warmup: int = 1) -> dict[str, float]:
    """Median samples/s per method over ``repeats`` interleaved passes (after ``warmup`` passes)."""
    rows = sum(b["input_ids"].shape[0] for b in batches)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(warmup + repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            for b in batches:
                run(b)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: rows / statistics.median(t) for name, t in times.items()}


def throughput_by_batch_size(batches_at: Callable[[int], list[dict[str, torch.Tensor]]], methods: dict[str, Runner],
                             batch_sizes: Iterable[int], repeats: int) -> dict[str, dict]:
    """``measure_throughput`` at each batch size, against the ``"full"`` method (which ``methods`` must have).

    ``batches_at(b)``: the timed rows in batches of ``b``. Returns ``{"full": {"throughput_bs<b>": samples/s},
    "operating_points": {name: {"wallclock_speedup_bs<b>": x, "throughput_bs<b>": samples/s}}}`` over
    every other method.
    """
    timing = {"full": {}, "operating_points": {name: {} for name in methods if name != "full"}}
    for bs in batch_sizes:
        tp = measure_throughput(batches_at(bs), methods, repeats=repeats)
        timing["full"][f"throughput_bs{bs}"] = tp["full"]
        for name, v in tp.items():
            if name in timing["operating_points"]:
                timing["operating_points"][name][f"wallclock_speedup_bs{bs}"] = v / tp["full"]
                timing["operating_points"][name][f"throughput_bs{bs}"] = v
    return timing
