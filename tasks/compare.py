"""Steps of ``exitflow compare``: one cell's summary (``tasks.reports.cells.CellSummary``, the
fields documented there) from an evaluation, and the static smaller-model baseline's evaluation.

Wall-clock speed-ups are throughput ratios against the full-depth model measured in the same
process (``models.timing.measure_throughput``: interleaved, medians); ``layer_speedup`` of a
timed point is that of the timed rows, so wall-clock and layer speed-up compare like with like.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from prefect import task

from models.errors import CheckpointError
from models.exiting import MultiExitModel
from models.flops import full_model_flops
from models.metrics import chance_check, predictions, task_score
from models.timing import full_model_runner, measure_throughput
from tasks.backbones import backbone_num_layers, load_backbone, load_checkpoint, pick_device
from tasks.caching import ARTIFACT_CACHE
from config.params import BackboneConfig, TrainConfig
from tasks.data import load_meta
from tasks.features import batches, encode_split
from tasks.io import TIMING_FILE, atomic_write_json, write_result
from tasks.reports.cells import CellSummary, TimedPoint
from tasks.row_predictions import SINGLE_POINT, write_test_rows
from tasks.train import exit_config

POINT_KEYS = ("threshold", "quality", "layer_speedup", "flops_speedup")


def _point(p: dict) -> dict:
    return {k: p[k] for k in POINT_KEYS}


def exit_cell_summary(evaluated: dict, checkpoint: Path, batch_size: int) -> CellSummary:
    """The cell summary of an ``evaluate_exits`` result, timed points at ``batch_size``."""
    summary = evaluated["summary"]
    curves = json.loads(Path(evaluated["curves"]).read_text())
    timing = json.loads(Path(evaluated["timing"]).read_text())["operating_points"]
    timed = {}
    for name, op in summary["operating_points"].items():
        wall = timing.get(name, {}).get(f"wallclock_speedup_bs{batch_size}")
        if wall is not None:
            timed[name] = TimedPoint(threshold=op["threshold"], test_quality=op["test"]["quality"],
                                     layer_speedup=op.get("timed_layer_speedup", op["test"]["layer_speedup"]),
                                     flops_speedup=op["test"]["flops_speedup"], wallclock_speedup=wall,
                                     dev_quality=op["dev"]["quality"], dev_layer_speedup=op["dev"]["layer_speedup"])
    return CellSummary(metric=summary["metric"], num_layers=summary["num_layers"], full_dev=summary["full"]["dev_quality"],
                       full_test=summary["full"]["test_quality"],
                       series={name: [{s: _point(p[s]) for s in ("dev", "test")} for p in points] for name, points in curves.items()},
                       timed=timed, checkpoint=str(checkpoint), test_rows=_rows(evaluated),
                       at_chance=summary.get("dev_chance_check", {}).get("at_chance"))


def _rows(evaluated: dict) -> str | None:
    return None if evaluated.get("test_rows") is None else str(evaluated["test_rows"])


def single_point_summary(name: str, metrics: dict, timing: dict, checkpoint: Path, batch_size: int,
                         test_rows: Path | None = None) -> CellSummary:
    """The cell summary of a model with one operating point (HashEE, a static baseline):
    ``metrics`` holds ``dev_quality``, ``test_quality``, ``layer_speedup``, ``flops_speedup``
    (measured on test: the hash or the depth fixes them, dev's differ only by the token mix),
    ``timed_layer_speedup``, ``metric`` and ``backbone_layers`` (and ``dev_chance_check`` when checked);
    ``test_rows``: its per-row test predictions (``tasks.row_predictions``)."""
    point = {"threshold": None, "layer_speedup": metrics["layer_speedup"], "flops_speedup": metrics["flops_speedup"]}
    wall = timing.get(f"wallclock_speedup_bs{batch_size}")
    timed = {} if wall is None else {name: TimedPoint(
        threshold=None, test_quality=metrics["test_quality"], layer_speedup=metrics["timed_layer_speedup"],
        flops_speedup=metrics["flops_speedup"], wallclock_speedup=wall)}
    return CellSummary(metric=metrics["metric"], num_layers=metrics["backbone_layers"], full_dev=metrics["dev_quality"],
                       full_test=metrics["test_quality"],
                       series={name: [{s: {**point, "quality": metrics[f"{s}_quality"]} for s in ("dev", "test")}]},
                       timed=timed, checkpoint=str(checkpoint), test_rows=None if test_rows is None else str(test_rows),
                       at_chance=metrics.get("dev_chance_check", {}).get("at_chance"))


@task(name="evaluate_static", cache_policy=ARTIFACT_CACHE, persist_result=True)
def evaluate_static(train: TrainConfig, backbone: BackboneConfig, ckpt_dir: Path, data_dir: Path, out_dir: Path,
                    cache_dir: Path | None = None, seed: int = 42, device: str = "auto", batch_size: int = 64,
                    timing_batch_size: int = 32, timing_rows: int = 256, timing_repeats: int = 3) -> dict:
    """A first-k-layers single-exit model against the full-depth backbone: dev/test quality,
    layer speed-up L/k, FLOPs speed-up on test, and wall-clock at ``timing_batch_size``.

    The full-depth reference for FLOPs and wall-clock is the backbone with all L layers and the
    same head (its weights do not change its cost), run in this process, interleaved.
    """
    torch_device = pick_device(device)
    model, tokenizer, meta = load_checkpoint(ckpt_dir, backbone.attn_implementation)
    L = backbone_num_layers(backbone.name)
    if model.num_layers > L:
        raise CheckpointError(f"{ckpt_dir}: {model.num_layers} layers, more than {backbone.name}'s {L}")
    full_backbone, _ = load_backbone(backbone.name, backbone.attn_implementation)
    full = MultiExitModel(full_backbone, exit_config(train, load_meta(data_dir, meta["task"])["spec"])).eval()
    model = model.to(torch_device)
    metric, regression, pad = meta["metric"], model.config.regression, tokenizer.pad_token_id or 0
    out = {"task": meta["task"], "metric": metric, "num_layers": model.num_layers, "backbone_layers": L,
           "layer_speedup": L / model.num_layers, "timed_layer_speedup": L / model.num_layers}
    encoded, logits = {}, {}
    for split, sub in (("dev", train.subsample.dev), ("test", train.subsample.test)):
        enc = encoded[split] = encode_split(data_dir, meta["task"], split, tokenizer, backbone.max_length, cache_dir, sub, seed)
        with torch.no_grad():
            logits[split] = torch.cat([model.early_exit(b["input_ids"], b["attention_mask"], b.get("token_type_ids")).logits.cpu()
                                       for b in batches(enc, batch_size, pad, device=torch_device)])
        out[f"{split}_quality"] = task_score(metric, logits[split], torch.tensor(enc["labels"]), regression)
    out["dev_chance_check"] = chance_check(metric, logits["dev"], torch.tensor(encoded["dev"]["labels"]), regression)
    model.cpu()  # timed on CPU, as evaluate_exits and evaluate_hashee time
    lengths = torch.tensor([len(ids) for ids in encoded["test"]["input_ids"]])
    out["flops_speedup"] = (full_model_flops(full, lengths).sum() / full_model_flops(model, lengths).sum()).item()
    n = min(timing_rows, len(lengths))
    sub_enc = {k: v[:n] for k, v in encoded["test"].items()}
    tp = measure_throughput(list(batches(sub_enc, timing_batch_size, pad)),
                            {"full": full_model_runner(full), "static": full_model_runner(model)}, repeats=timing_repeats)
    timing = {f"throughput_bs{timing_batch_size}": tp["static"], f"full_throughput_bs{timing_batch_size}": tp["full"],
              f"wallclock_speedup_bs{timing_batch_size}": tp["static"] / tp["full"]}
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "metrics.json", out)
    atomic_write_json(out_dir / TIMING_FILE, timing)
    rows = write_test_rows(out_dir, encoded["test"]["labels"], {SINGLE_POINT: predictions(logits["test"], regression)}, regression)
    return write_result(out_dir, {"metrics": out_dir / "metrics.json", "timing": out_dir / TIMING_FILE, "test_rows": rows,
                                  "summary": out, "timing_summary": timing})
