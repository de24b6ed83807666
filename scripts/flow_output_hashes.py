"""Every flow on a tiny project built in code, its deterministic outputs hashed: a refactor check.

    python scripts/flow_output_hashes.py run OUT        # runs the default pipeline, past-future, leco,
                                                        # generate and compare; writes OUT/hashes.json
    python scripts/flow_output_hashes.py compare A B    # which outputs differ (timings set apart)

Run it from the repository root, before and after a change, with OUT at the same path both times
(backbone paths are recorded in checkpoints): the outputs must be byte-identical except wall-clock
fields. ``.inputs-key`` stamps (they hash the source), ``timing.json`` files and token caches are
left out. Dev tool: the tiny models and data come from ``tests/flows``.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

TIMED = ("wallclock", "throughput", "timed", "seconds")


def run(out: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import yaml
    from prefect.testing.utilities import prefect_test_harness

    from tests.flows.conftest import make_backbone, make_sst2
    from tests.flows.test_compare import make_similarity
    from tests.flows.test_generation import tiny as generate_overrides
    from tests.flows.test_leco import TINY as LECO
    from tests.flows.test_past_future import TINY as PAST_FUTURE

    proj = out / "proj"
    proj.mkdir(parents=True)
    make_backbone(proj / "backbone")
    make_sst2(proj / "src")
    make_similarity(proj / "src")
    params = {
        "data": {"source_dir": "src", "tasks": ["sst2"],
                 "custom": {"sim": {"files": {s: f"sim/{s}.tsv" for s in ("train", "dev", "test")},
                                    "text_columns": ["s1", "s2"], "label_column": "score", "label_type": "float",
                                    "metric": "pearson_spearman"}}},
        "backbone": {"name": str(proj / "backbone"), "attn_implementation": "eager", "max_length": 16},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "pooling": "mean"},
        "hashee": {"buckets": 3},
        "evaluate": {"sweep_points": 5, "timing_rows": 8, "timing_repeats": 1, "timing_batch_sizes": [1, 4]},
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "golden", "registered_model": "tiny-exits"},
        "leco": {"search_epochs": 1, "inner_size": 8,
                 "search_space": {"activation_1": ["relu"], "encoder_1": ["conv_1", "skip"], "encoder_2": ["null"],
                                  "pooling": ["avg"], "activation_2": ["gelu"]}},
        "compare": {"tasks": ["sst2", "sim"], "methods": ["all"], "seeds": [0], "lr_grid": [1e-3, 5e-3],
                    "static_layers": [1, 3], "timing_batch_size": 4, "sequential": True, "torch_threads": 1},
    }
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=proj, check=True)
    path = str(proj / "params.yaml")
    with prefect_test_harness(server_startup_timeout=180):
        from flows.compare import compare_flow
        from flows.generation import generate_pipeline
        from flows.leco import leco_pipeline
        from flows.past_future import past_future_pipeline
        from flows.pipeline import exitflow_pipeline

        os.chdir(proj)
        exitflow_pipeline(path)
        past_future_pipeline(path, PAST_FUTURE)
        leco_pipeline(path, LECO)
        generate_pipeline(path, generate_overrides(proj))
        compare_flow(path, [])
    hashes = {str(f.relative_to(proj)): hashlib.sha256(f.read_bytes()).hexdigest()
              for d in ("data", "artifacts") for f in sorted((proj / d).rglob("*"))
              if f.is_file() and "/cache/tokens/" not in f.as_posix() and f.name not in {"timing.json", ".inputs-key"}}
    (out / "hashes.json").write_text(json.dumps(hashes, indent=1, sort_keys=True))
    print(f"{len(hashes)} files hashed: {out / 'hashes.json'}")


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not any(t in k for t in TIMED)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def compare(first: Path, second: Path) -> int:
    a, b = (json.loads((p / "hashes.json").read_text()) for p in (first, second))
    print("only in the first:", sorted(set(a) - set(b)))
    print("only in the second:", sorted(set(b) - set(a)))
    differ, timings = [], []
    for name in sorted(set(a) & set(b)):
        if a[name] == b[name]:
            continue
        if name.endswith(".json"):
            left, right = (json.loads((p / "proj" / name).read_text()) for p in (first, second))
            if without_timings(left) == without_timings(right):
                timings.append(name)
                continue
        if "/compare/default/report/" in name and not name.endswith(".json"):  # plots and tables with wall-clock
            timings.append(name)
            continue
        differ.append(name)
    print(f"{len(set(a) & set(b))} files in both; {len(timings)} differ only in timings; {len(differ)} differ")
    for name in differ:
        print("  ", name)
    return int(bool(differ or set(a) ^ set(b)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]).resolve())
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
