"""Per-architecture adapters: the only place that knows how an HF encoder is laid out.

For a seq2seq model (``bart``) the adapter exposes its encoder only; the decoder is untouched.

An adapter exposes the four things the exit loop in ``models/exiting.py`` needs:
``embed`` (token ids -> first hidden states), ``layers`` (L callables ``h, mask -> h``),
``attention_mask`` (2-D padding mask -> whatever the layers expect) and ``pretrained_pooler``.
Everything else (heads, criteria, compaction) is architecture-independent.
"""

from __future__ import annotations

from torch import nn

from models.adapters.bart import BartEncoderAdapter
from models.adapters.base import EncoderAdapter
from models.adapters.bert import AlbertAdapter, BertAdapter, DistilBertAdapter
from models.errors import ModelSpecError

ADAPTERS: dict[str, type[EncoderAdapter]] = {
    "bert": BertAdapter,
    "roberta": BertAdapter,
    "electra": BertAdapter,
    "albert": AlbertAdapter,
    "distilbert": DistilBertAdapter,
    "bart": BartEncoderAdapter,
}


def adapter_for(backbone: nn.Module) -> EncoderAdapter:
    """Wrap an HF base model (``AutoModel`` output) in the adapter for its family.

    Raises:
        ModelSpecError: the model type has no adapter; the message lists the supported ones.
    """
    model_type = getattr(backbone.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ModelSpecError(
            f"backbone model_type {model_type!r} has no exit adapter; "
            f"supported: {', '.join(sorted(ADAPTERS))}"
        )
    return ADAPTERS[model_type](backbone)


__all__ = ["ADAPTERS", "EncoderAdapter", "adapter_for"]
