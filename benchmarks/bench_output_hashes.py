"""Benchmark: what checking a cache hit costs (``tasks.output_hashes``), on a real checkpoint.

Saves a multi-exit checkpoint of the packaged MiniLM backbone (``minilm-l6``, about 90 MB) with
the pipeline's ``save_checkpoint`` into a temporary step folder, then times ``record_outputs``
(after a step runs) and ``changed_output`` (a cache hit) over it: medians of ``--repeats``, the
files in the page cache (a second read; a cold disk adds its read time).

    python benchmarks/bench_output_hashes.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.exiting import MultiExitConfig, MultiExitModel  # noqa: E402
from tasks.backbones import load_backbone, save_checkpoint  # noqa: E402
from tasks.output_hashes import changed_output, output_files, record_outputs  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    backbone, tokenizer = load_backbone("minilm-l6")
    model = MultiExitModel(backbone, MultiExitConfig(num_outputs=2))
    with tempfile.TemporaryDirectory() as tmp:
        step = Path(tmp) / "train"
        save_checkpoint(model, tokenizer, step / "checkpoint", {"task": "bench"})
        files = len(output_files(step))
        size = sum((step / rel).stat().st_size for rel in output_files(step))
        record_outputs(step)  # warms the page cache
        record = median_seconds(lambda: record_outputs(step), args.repeats)
        check = median_seconds(lambda: changed_output(step, "bench"), args.repeats)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores: {size / 1e6:.1f} MB in "
          f"{files} files; record {record:.3f} s, "
          f"check on a cache hit {check:.3f} s ({size / 1e6 / check:.0f} MB/s), medians of {args.repeats}")


if __name__ == "__main__":
    main()
