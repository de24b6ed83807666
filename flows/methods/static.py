"""Static smaller models: the first k layers fine-tuned as a single-exit model, the line every
early-exit method must beat in the comparison."""

from flows.registry import Method, register

register(Method(
    name="static", order=90, baseline=True,
    summary="the first k layers fine-tuned as a single-exit model: the line early exit must beat",
    flows_module="flows.static", model_module="models.exiting", config_section="compare",
    cell="static_cell", variants="static_variants"))
