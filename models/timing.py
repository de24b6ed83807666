"""Wall-clock throughput, measured side by side in one process (medians over repeats).

Each repeat times every method once over the same pre-built batches, in turn, so the full
model and the early-exit methods see the same machine state.
"""

from __future__ import annotations

import statistics
import time

import torch

from models.criteria import ExitCriterion
from models.exiting import MultiExitModel


@torch.no_grad()
def measure_throughput(
    model: MultiExitModel,
    batches: list[dict[str, torch.Tensor]],
    methods: dict[str, ExitCriterion | None],
    repeats: int = 3,
    warmup: int = 1,
) -> dict[str, float]:
    """Median samples/s per method (``None`` = full model: all layers, last head only)."""
    model.eval()
    rows = sum(b["input_ids"].shape[0] for b in batches)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(warmup + repeats):
        for name, criterion in methods.items():
            start = time.perf_counter()
            for b in batches:
                model.early_exit(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), criterion)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: rows / statistics.median(t) for name, t in times.items()}
