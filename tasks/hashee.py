"""Task: evaluate a HashEE model against the full model of the same backbone.

Reports quality (dev, test), analytic FLOPs speed-up per instance (paper Table 10, un-padded
lengths) relative to (a) the full model of the same backbone and (b) a 12-layer model of the
same width (the paper's tables are relative to BERT-base), and measured throughput of
HashEE vs the full model on the same weights, timed side by side.

Outputs in ``out_dir``: ``metrics.json``, ``result.json`` and ``timing.json`` (``throughput_bs<b>``,
``full_throughput_bs<b>``, ``wallclock_speedup_bs<b>``: the only output that changes from one
machine or run to the next; ``tasks.io.read_metrics`` merges it back).
"""

from __future__ import annotations

from pathlib import Path

import torch
from prefect import task

from models.errors import CheckpointError
from models.flops import full_model_flops, layer_flops
from models.hashee import HashEEModel, hashee_instance_flops
from models.metrics import chance_check, predictions, task_score
from models.timing import exit_runner, full_model_runner, measure_throughput
from tasks.backbones import load_checkpoint
from tasks.caching import ARTIFACT_CACHE
from config.params import BackboneConfig, EvaluateConfig, HasheeConfig, TrainConfig
from tasks.features import batches, encode_split
from tasks.hash_table import load_hash_table
from tasks.io import TIMING_FILE, atomic_write_json, write_result
from tasks.row_predictions import SINGLE_POINT, write_test_rows


@torch.no_grad()
def predict(model, enc, batch_size, pad):
    logits = [model.early_exit(b["input_ids"], b["attention_mask"], b.get("token_type_ids")).logits
              for b in batches(enc, batch_size, pad)]
    return torch.cat(logits)


@task(name="evaluate_hashee", cache_policy=ARTIFACT_CACHE, persist_result=True)
def evaluate_hashee(hashee: HasheeConfig, evaluate: EvaluateConfig, train: TrainConfig, backbone: BackboneConfig,
                    ckpt_dir: Path, full_ckpt_dir: Path, table_dir: Path, data_dir: Path, out_dir: Path,
                    cache_dir: Path | None = None, seed: int = 42) -> dict:
    """Quality, FLOPs and wall-clock of HashEE vs the full (single-exit fine-tuned) model."""
    model, tokenizer, meta = load_checkpoint(ckpt_dir, backbone.attn_implementation)
    if not isinstance(model, HashEEModel):
        raise CheckpointError(f"{ckpt_dir} is not a HashEE checkpoint")
    if hashee.kind == "random_incons":  # Rand-incons: another random table at inference
        model.exit_table.copy_(load_hash_table(table_dir, tokenizer, model.num_layers, inference=True))
    full, _, _ = load_checkpoint(full_ckpt_dir, backbone.attn_implementation)
    metric, regression, pad = meta["metric"], model.config.regression, tokenizer.pad_token_id or 0
    out = {"task": meta["task"], "kind": hashee.kind, "buckets": hashee.buckets, "num_layers": model.num_layers,
           "backbone_layers": full.num_layers}
    encoded, logits = {}, {}
    for split, sub in (("dev", train.subsample.dev), ("test", train.subsample.test)):
        enc = encoded[split] = encode_split(data_dir, meta["task"], split, tokenizer, backbone.max_length, cache_dir, sub, seed)
        labels = torch.tensor(enc["labels"])
        logits[split] = predict(model, enc, evaluate.batch_size, pad)
        out[f"{split}_quality"] = task_score(metric, logits[split], labels, regression)
        out[f"full_{split}_quality"] = task_score(metric, predict(full, enc, evaluate.batch_size, pad), labels, regression)
    # FLOPs per instance on test (un-padded lengths)
    enc = encoded["test"]
    lengths = torch.tensor([len(ids) for ids in enc["input_ids"]])
    method = torch.tensor([float(hashee_instance_flops(model, model.exit_table[torch.tensor(ids)].tolist()))
                           for ids in enc["input_ids"]], dtype=torch.float64)
    a = full.adapter
    full_flops = full_model_flops(full, lengths)
    bert12 = torch.tensor([12 * layer_flops(int(n), a.hidden_size, a.intermediate_size) + full.heads[-1].flops(int(n))
                           for n in lengths], dtype=torch.float64)
    exits = torch.cat([model.exit_table[torch.tensor(ids)] for ids in enc["input_ids"]]).float()
    out.update({"flops_speedup": (full_flops.sum() / method.sum()).item(),
                "flops_speedup_vs_12_layers": (bert12.sum() / method.sum()).item(),
                "avg_token_exit_layer": exits.mean().item(),
                "layer_speedup": full.num_layers / exits.mean().item()})
    # wall-clock: HashEE vs the full model, same process, interleaved, on the first n test rows;
    # their own layer speed-up is reported too, so the wall/layer ratio compares like with like
    n = min(evaluate.timing_rows, len(enc["labels"]))
    sub_enc = {k: v[:n] for k, v in enc.items()}
    timed = torch.cat([model.exit_table[torch.tensor(ids)] for ids in sub_enc["input_ids"]]).float()
    out.update({"timing_rows": n, "timed_layer_speedup": full.num_layers / timed.mean().item()})
    timing = {}  # differs between machines and runs: timing.json, never metrics.json
    for bs in hashee.timing_batch_sizes:
        tp = measure_throughput(list(batches(sub_enc, bs, pad)), {"full": full_model_runner(full), "hashee": exit_runner(model, None)},
                                repeats=evaluate.timing_repeats)
        timing[f"throughput_bs{bs}"] = tp["hashee"]
        timing[f"full_throughput_bs{bs}"] = tp["full"]
        timing[f"wallclock_speedup_bs{bs}"] = tp["hashee"] / tp["full"]
    out["dev_chance_check"] = chance_check(metric, logits["dev"], torch.tensor(encoded["dev"]["labels"]), regression)
    atomic_write_json(out_dir / "metrics.json", out)
    atomic_write_json(out_dir / TIMING_FILE, timing)
    rows = write_test_rows(out_dir, encoded["test"]["labels"], {SINGLE_POINT: predictions(logits["test"], regression)}, regression)
    return write_result(out_dir, {"metrics": out_dir / "metrics.json", "timing": out_dir / TIMING_FILE, "test_rows": rows,
                                  "summary": out})

