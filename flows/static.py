"""Static smaller models: the first k backbone layers fine-tuned as a single-exit model.

The line every early-exit method is compared with (``exitflow compare``): a model that stops at
layer k for every input is L/k times faster by construction, so an early-exit method is worth
its machinery only where it is above that line. One variant per ``compare.static_layers``
depth, named ``static-<k>``; k = L is the full model. Artifacts: ``Layout.static_baseline(k)``.
"""

from __future__ import annotations

from flows.context import RunContext
from flows.steps import train_exit_model
from tasks.backbones import backbone_num_layers
from tasks.caching import run_cached
from tasks.compare import evaluate_static, single_point_summary
from config.params import ConfigError, Params
from tasks.reports.cells import static_depth, static_method


def static_variants(params: Params) -> list[str]:
    """``static-<k>`` for each ``compare.static_layers`` k (1..L of the backbone)."""
    L = backbone_num_layers(params.backbone.name)
    too_deep = [k for k in params.compare.static_layers if k > L]
    if too_deep:
        raise ConfigError(f"compare.static_layers: {too_deep} exceed {params.backbone.name}'s {L} layers")
    return [static_method(k) for k in params.compare.static_layers]


def static_cell(ctx: RunContext, variant: str) -> dict:
    """The first k layers (``static-<k>``) fine-tuned as a single-exit model (no exit scorer),
    evaluated against the full-depth backbone (``tasks.compare.evaluate_static``)."""
    params, k = ctx.params, static_depth(variant)
    dirs = ctx.layout.static_baseline(k)
    train = params.train.model_copy(update={"exit_scorer": None})
    # k = L is the full model: keyed as every other single-exit full model (HashEE's reference), trained once
    L = backbone_num_layers(params.backbone.name)
    trained = train_exit_model(ctx, train, "single", dirs.train, share=True, num_layers=None if k == L else k)
    ev = params.evaluate
    evaluated = run_cached(evaluate_static, out_dir=dirs.evaluate, train=train, backbone=params.backbone,
                           ckpt_dir=trained["checkpoint"], batch_size=ev.batch_size,
                           timing_batch_size=params.compare.timing_batch_size, timing_rows=ev.timing_rows,
                           timing_repeats=ev.timing_repeats, **ctx.inputs.kwargs())
    return single_point_summary("static", evaluated["summary"], evaluated["timing_summary"], trained["checkpoint"],
                                params.compare.timing_batch_size, evaluated.get("test_rows"))

