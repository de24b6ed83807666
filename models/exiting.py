"""The multi-exit model and the only layer-by-layer loop in exitflow.

Layer convention: layers are numbered 1..L; ``exit_layer = k`` means "the prediction of exit
head k after layer k has run". The hidden state the heads read after layer k equals HF's
``hidden_states[k]`` (index 0 being the embeddings); a test checks this per adapter.

Shape notation: L = layers (= exits), b = batch, s = sequence length, d = hidden size,
c = outputs (classes, or 1 for regression).

Exit modules plug in by name (``models/registry.py``): the exits (``MultiExitConfig.head``, a
per-layer head kind or a whole exit stack, with ``head_options``), an optional exit scorer (``MultiExitConfig.scorer``, e.g. BERxiT's ``lte`` or ConsistentEE's
``policy``) and the criterion passed to ``early_exit``. This file imports none of the methods.

Two forward paths share the same adapter, heads and criteria:

- ``forward``: runs every layer and records every exit (training, offline simulation);
- ``early_exit``: real inference; after each layer the rows that exited are removed from the
  running batch (``index_select``) and the padded tail no remaining row needs is trimmed, so
  later layers only compute still-active rows.

Exits that read earlier layers (Global Past-Future) do so through the stack's per-row memory,
which both loops thread from layer to layer and ``early_exit`` compacts with the batch.
``detached_layers`` (training only) detaches the named layers' outputs: stochastic freezing of
the bottom layers (``models.training.stochastic_freeze``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.adapters import EncoderAdapter, adapter_for
from models.criteria import ExitCriterion, Static, select_rows
from models.errors import ModelSpecError
from models.exit_heads import build_exit_heads
from models.registry import ExitScorer, ExitStack, build_scorer


@dataclass(frozen=True)
class MultiExitConfig:
    """What sits on top of the backbone. Saved next to checkpoints (self-describing)."""

    num_outputs: int
    regression: bool = False
    head: str = "linear"
    head_options: dict = field(default_factory=dict)  # a registered exit stack's options (Past-Future: past, future, gate)
    head_dropout: float = 0.1
    pooling: str = "cls"
    scorer: str | None = None  # a registered exit scorer: "lte" (BERxiT), "policy" (ConsistentEE), or none

    def to_dict(self) -> dict:
        """The saved form; ``head_options`` only when set, so checkpoints of per-layer heads read
        as they did before exit stacks existed (``from_dict`` restores the default)."""
        saved = asdict(self)
        if not saved["head_options"]:
            del saved["head_options"]
        return saved

    @classmethod
    def from_dict(cls, saved: dict) -> "MultiExitConfig":
        """Read a saved config; checkpoints written before scorers had names carry
        ``lte`` / ``policy`` booleans instead of ``scorer``."""
        saved = dict(saved)
        legacy = [name for name in ("lte", "policy") if saved.pop(name, False)]
        if legacy and "scorer" not in saved:
            saved["scorer"] = legacy[0]
        return cls(**saved)


@dataclass
class MultiExitOutput:
    """Every exit's output from one full pass.

    Attributes:
        logits: ``[L, b, c]`` exit k's output at index k - 1.
        trained_logits: ``[L, b, c]`` what the objectives train: ``logits`` unless the exits
            combine votes (then each layer's local prediction; ``ExitStack.trained_logits``).
        auxiliary_loss: a scalar the exits add to every objective (Past-Future's imitation
            loss), or None.
        states: ``[L, b, d]`` the states learned exit modules read.
        scores: each learned exit module's output ``[L, b]`` under its own name: ``"lte"``
            (BERxiT certainty u_k, trained by the LTE loss) or ``"policy"`` (ConsistentEE
            exit probability pi_k, last row 1, trained only by REINFORCE). Empty without either.
            Only ``"lte"`` enters the training objectives.
    """

    logits: torch.Tensor
    states: torch.Tensor
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    trained_logits: torch.Tensor | None = None
    auxiliary_loss: torch.Tensor | None = None


@dataclass
class EarlyExitOutput:
    """Real early-exit inference result.

    Attributes:
        logits: ``[b, c]`` the output of each row's exit head.
        exit_layer: ``[b]`` 1-based exit layer per row.
    """

    logits: torch.Tensor
    exit_layer: torch.Tensor


class MultiExitModel(nn.Module):
    """An HF encoder with one exit head per layer and an optional exit scorer.

    The scorer is registered as a submodule under its own name (``model.lte``,
    ``model.policy``), so parameter names say which method a parameter belongs to.

    Args:
        backbone: HF base model from ``AutoModel`` (BERT, RoBERTa, ALBERT, DistilBERT, ELECTRA).
        config: the exits' configuration.
    """

    def __init__(self, backbone: nn.Module, config: MultiExitConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.adapter: EncoderAdapter = adapter_for(backbone)
        self.heads: ExitStack = build_exit_heads(
            config.head,
            self.num_layers,
            self.adapter.hidden_size,
            config.num_outputs,
            config.head_dropout,
            self.adapter.pretrained_pooler,
            config.pooling,
            config.head_options,
        )
        if config.scorer is not None:
            self.add_module(config.scorer, build_scorer(config.scorer, self.adapter.hidden_size, self.num_layers))
        self.detached_layers: frozenset[int] = frozenset()

    def start_regression_at(self, labels) -> None:
        """Regression exits start at the mean of the training ``labels`` ``[n]``: every exit's
        output bias is set to it, weights unchanged, so each prediction starts at the mean plus a
        small random term (``models/exit_heads.py`` docstring: why). Classification: nothing."""
        if not self.config.regression:
            return
        mean = float(torch.as_tensor(labels, dtype=torch.float64).mean())
        with torch.no_grad():
            for layer in self.heads.output_layers():
                layer.bias.fill_(mean)

    @property
    def scorer(self) -> ExitScorer | None:
        return getattr(self, self.config.scorer) if self.config.scorer is not None else None

    def exit_score(self, module: str | None, layer: int, state: torch.Tensor) -> torch.Tensor | None:
        """Exit scorer ``module``'s score at 1-based ``layer`` for ``state [b, d]``; None for
        criteria that read no scorer."""
        if module is None:
            return None
        if module != self.config.scorer:
            raise ModelSpecError(f"this model's exit scorer is {self.config.scorer!r}, the criterion needs {module!r}")
        return self.scorer(layer, state)

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> MultiExitOutput:
        """Run all L layers and every exit head. Inputs are ``[b, s]``."""
        hidden = self.adapter.embed(input_ids, token_type_ids)
        mask = self.adapter.attention_mask(attention_mask, hidden)
        logits, states, memory = [], [], None
        for k, layer in enumerate(self.adapter.layers, start=1):
            hidden = layer(hidden, mask)
            if k in self.detached_layers:
                hidden = hidden.detach()
            out, state, memory = self.heads.step(k, hidden, attention_mask, memory)
            logits.append(out)
            states.append(state)
        states_t, logits_t = torch.stack(states), torch.stack(logits)  # [L, b, d], [L, b, c]
        scores = {self.config.scorer: self.scorer.all_layers(states_t)} if self.scorer is not None else {}
        auxiliary = self.heads.auxiliary_loss(states_t) if torch.is_grad_enabled() else None  # no loss when recording
        return MultiExitOutput(logits_t, states_t, scores, self.heads.trained_logits(states_t, logits_t), auxiliary)

    @torch.no_grad()
    def early_exit(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        criterion: ExitCriterion | None = None,
    ) -> EarlyExitOutput:
        """Real early-exit inference with batch compaction.

        ``criterion=None`` runs the full model: all L layers and only the last head.
        """
        criterion = criterion if criterion is not None else Static(self.num_layers)
        if criterion.needs_certainty and criterion.module != self.config.scorer:
            raise ModelSpecError(f"criterion {criterion.name!r} needs {criterion.requirement}")
        batch, device = input_ids.shape[0], input_ids.device
        right_padded = bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())
        hidden = self.adapter.embed(input_ids, token_type_ids)
        padding = attention_mask
        mask = self.adapter.attention_mask(padding, hidden)
        rows = torch.arange(batch, device=device)  # original index of each running row
        state = criterion.init_state(batch, device)
        out_logits = torch.empty(batch, self.config.num_outputs, device=device)
        exit_layer = torch.full((batch,), self.num_layers, dtype=torch.long, device=device)
        memory = None  # the exit stack's per-row memory of earlier layers (None for per-layer heads)

        for k, layer in enumerate(self.adapter.layers, start=1):
            hidden = layer(hidden, mask)
            decide = k == self.num_layers or criterion.needs_head(k)
            if not (decide or self.heads.carries_memory):
                continue
            logits, head_state, memory = self.heads.step(k, hidden, padding, memory, decide)
            if not decide:
                continue
            score = self.exit_score(criterion.module, k, head_state)
            fire, state = criterion.step(k, logits, score, state)
            if k == self.num_layers:
                fire = torch.ones_like(fire)
            if not fire.any():
                continue
            out_logits[rows[fire]] = logits[fire].to(out_logits.dtype)
            exit_layer[rows[fire]] = k
            keep = (~fire).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            # compaction: later layers only compute still-active rows
            hidden, padding, rows = hidden[keep], padding[keep], rows[keep]
            state = select_rows(state, keep)
            memory = select_rows(memory, keep) if memory is not None else None
            if right_padded:
                length = int(padding.sum(1).max())
                hidden, padding = hidden[:, :length], padding[:, :length]
            mask = self.adapter.attention_mask(padding, hidden)
        return EarlyExitOutput(out_logits, exit_layer)
