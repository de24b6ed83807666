"""What the full comparison profile costs, extrapolated from a measured quick run.

usage: PYTHONPATH=. .venv/bin/python scripts/compare_cost.py [--profile quick] [--target full]

Reads the latest ``exitflow compare`` parent run of ``--profile`` in MLflow (experiment
``exitflow-compare``): each nested cell run has its ``seconds`` (all its learning rates; one
torch thread per cell on the LocalCluster, so seconds are core-seconds). Each cell's time is
scaled as training time scales, linearly in

    training rows (the target profile's subsample, or the task's train split)
  x epochs x seeds x learning rates (x static k summed over the target's k / the measured k)

and printed per task and in total, in CPU core-hours of this machine. Evaluation, which grows
with dev/test rows and does not scale with epochs, is counted as if it were training: the
estimate errs high there and low on longer sequences (the quick profile cuts them at 64 tokens;
a training step at 128 tokens took 1.9x one at 64 on padded batches here). A rough figure, for
planning; it says nothing about GPUs, which this machine does not have.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import mlflow

from flows.tracking import tracking_uri
from config.params import load_params

ROOT = Path(__file__).resolve().parent.parent


def latest_cells(profile: str) -> list[dict]:
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("exitflow-compare")
    if exp is None:
        raise SystemExit("no exitflow-compare experiment in MLflow: run `exitflow compare` first")
    parents = client.search_runs([exp.experiment_id], f"tags.profile = '{profile}' and attributes.status = 'FINISHED'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise SystemExit(f"no finished compare run with profile {profile!r}")
    parent = parents[0].info.run_id
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=5000)
    return [{**r.data.params, "seconds": r.data.metrics.get("seconds", 0.0)} for r in runs if "method" in r.data.params]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="the measured profile")
    parser.add_argument("--target", default="full", help="the profile to estimate")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = parser.parse_args()
    measured, target = load_params(args.params, [], args.profile), load_params(args.params, [], args.target)
    mlflow.set_tracking_uri(tracking_uri(measured))
    cells = latest_cells(args.profile)

    def rows(params, task):
        full = json.loads((params.path(params.data.out_dir) / task / "meta.json").read_text())["rows"]["train"]
        return min(params.train.subsample.train or full, full)

    per_run = (target.train.epochs / measured.train.epochs) * (len(target.compare.seeds) / len(measured.compare.seeds)) \
        * (len(target.compare.lr_grid) / len(measured.compare.lr_grid))
    static = sum(target.compare.static_layers) / sum(measured.compare.static_layers)
    hours: dict[str, float] = defaultdict(float)
    for c in cells:
        scale = per_run * rows(target, c["task"]) / rows(measured, c["task"]) * (static if c["method"].startswith("static-") else 1)
        hours[c["task"]] += c["seconds"] * scale / 3600
    measured_h = sum(c["seconds"] for c in cells) / 3600
    print(f"measured {args.profile}: {measured_h:.2f} core-hours over {len(cells)} cells")
    for task, h in hours.items():
        print(f"  {args.target} estimate {task}: {h:.1f} core-hours")
    print(f"{args.target} estimate: {sum(hours.values()):.1f} core-hours "
          f"(x {per_run:.1f} for epochs x seeds x learning rates, x rows per task)")


if __name__ == "__main__":
    main()
