"""Can instance difficulty be learned? (HashEE paper, section 2): predictors and metrics.

A difficulty label is one bit per layer, 1 = that layer's exit predicts the instance (or token)
correctly. Predictors map an instance to L bits:

| paper      | code                                                     | loss            |
| ---------- | -------------------------------------------------------- | --------------- |
| Majority   | ``majority_bits`` (per-layer prior of the training part) | -               |
| Linear-M   | ``LinearM``: mean-pooled word embeddings -> L+1 outcomes | cross-entropy   |
| Linear-B   | ``LinearB``: one binary probe per layer on the annotator's state at that layer | BCE |
| BiLSTM     | ``BiLSTMPredictor`` (1 layer, hidden 256, padding masked) | BCE (multi-label) |
| BERT       | ``EncoderPredictor`` (fine-tuned backbone)                | BCE (multi-label) |

Metrics (``difficulty_metrics``): micro precision / recall / F1 of the *negative* label (an exit
that would be wrong) over all (instance, layer) pairs, plus accuracy and per-layer accuracy.

Shapes: n instances (or tokens), L layers, b batch, s sequence, d hidden.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.adapters import adapter_for


def difficulty_metrics(gold: np.ndarray, pred: np.ndarray) -> dict:
    """Micro P/R/F1 (percent) of the negative label (0) over all pairs; accuracy and per-layer accuracy.

    ``gold``, ``pred``: ``[n, L]`` in {0, 1}. Precision is ``None`` when nothing is predicted
    negative (undefined), and then F1 too.
    """
    gold, pred = np.asarray(gold).astype(int), np.asarray(pred).astype(int)
    p, r, f, _ = precision_recall_fscore_support(gold.ravel(), pred.ravel(), pos_label=0, average="binary", zero_division=0)
    any_negative = bool((pred == 0).any())
    return {"precision": 100.0 * p if any_negative else None, "recall": 100.0 * r,
            "f1": 100.0 * f if any_negative else None, "accuracy": 100.0 * accuracy_score(gold.ravel(), pred.ravel()),
            "layer_accuracy": [100.0 * float((gold[:, k] == pred[:, k]).mean()) for k in range(gold.shape[1])]}


def majority_bits(train_labels: np.ndarray) -> np.ndarray:
    """Per-layer majority class of the training part, ``[L]`` (ties go to 1, "correct")."""
    return (np.asarray(train_labels).mean(0) >= 0.5).astype(int)


def exit_outcome(labels: torch.Tensor) -> torch.Tensor:
    """``[n, L]`` bits -> ``[n]`` outcome in 0..L: the first layer (0-based) from which every exit
    is correct, or L when the last exit is wrong ("never"). Linear-M's target."""
    num_layers = labels.shape[1]
    trailing = torch.cumprod(labels.flip(1).long(), dim=1).sum(1)  # run of 1s ending at layer L
    return num_layers - trailing


def outcome_bits(outcome: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Inverse view of ``exit_outcome``: layers >= outcome are 1, earlier ones 0 -> ``[n, L]``."""
    return (torch.arange(num_layers, device=outcome.device)[None, :] >= outcome[:, None]).long()


def oversample_order(negatives: np.ndarray, pairs: np.ndarray, seed: int, max_growth: float = 1.0) -> list[int]:
    """Row indices of predictor-train with the rows that hold a negative label repeated; shuffled.

    The negative label ("exit is wrong") is the minority class over (instance, layer) pairs, so
    its weight must rise (METHODS.md section 6). Each extra draw picks one negative (instance,
    layer) pair uniformly (seeded, with replacement) and repeats the row that holds it, so a row
    is drawn in proportion to its number of negative labels; draws stop when negative and
    positive pairs are equally frequent, or when ``max_growth`` times the part's size has been
    added. Rows without a negative label are never repeated; when negatives are already the
    majority nothing is added.

    Args:
        negatives: ``[n]`` negative labels per row (a sentence: over its layers; token level: over
            its words and layers).
        pairs: ``[n]`` labels per row.
    Used on the predictor-train part only; dev and test are never resampled.
    """
    negatives, pairs = np.asarray(negatives), np.asarray(pairs)
    rng = np.random.default_rng(seed)
    extra = np.array([], dtype=int)
    budget = int(max_growth * len(negatives))
    if negatives.sum() and budget and 2 * negatives.sum() < pairs.sum():
        draws = rng.choice(len(negatives), size=budget, replace=True, p=negatives / negatives.sum())
        # parity after the first k draws: 2 * (negatives + added negatives) >= pairs + added pairs
        reached = np.flatnonzero(2 * (negatives.sum() + np.cumsum(negatives[draws])) >= pairs.sum() + np.cumsum(pairs[draws]))
        extra = draws[: reached[0] + 1 if len(reached) else budget]
    order = np.concatenate([np.arange(len(negatives)), extra]).astype(int)
    rng.shuffle(order)
    return order.tolist()


def negative_share(negatives: np.ndarray, pairs: np.ndarray, order: list[int] | None = None) -> float:
    """Share of negative labels over the (instance, layer) pairs of ``order`` (default: every row once)."""
    idx = np.arange(len(negatives)) if order is None else np.asarray(order)
    return float(np.asarray(negatives)[idx].sum() / max(1, np.asarray(pairs)[idx].sum()))


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[b, s, d]`` states, ``[b, s]`` mask -> ``[b, d]`` mean over real tokens."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


class LinearM(nn.Module):
    """Mean-pooled (frozen) word embeddings -> softmax over the L + 1 exit outcomes."""

    def __init__(self, embeddings: torch.Tensor, num_layers: int):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(embeddings.detach().clone(), freeze=True)
        self.out = nn.Linear(embeddings.shape[1], num_layers + 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        """-> outcome logits ``[b, L + 1]``."""
        return self.out(masked_mean(self.embed(input_ids), attention_mask))

    @staticmethod
    def to_bits(logits: torch.Tensor) -> torch.Tensor:
        return outcome_bits(logits.argmax(-1), logits.shape[-1] - 1)


class LinearB(nn.Module):
    """One binary probe per layer on that layer's (frozen) annotator state: ``[L, n, d] -> [n, L]`` logits."""

    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.probes = nn.ModuleList(nn.Linear(hidden_size, 1) for _ in range(num_layers))

    def forward(self, states: torch.Tensor, **_) -> torch.Tensor:
        return torch.stack([probe(s).squeeze(-1) for probe, s in zip(self.probes, states)], dim=-1)


class BiLSTMPredictor(nn.Module):
    """Word embeddings (initialised from the backbone's, trained) -> 1-layer BiLSTM (hidden 256,
    padding packed away) -> L logits per instance (masked mean) or per token (``token_level``)."""

    def __init__(self, embeddings: torch.Tensor, num_layers: int, hidden: int = 256, token_level: bool = False):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(embeddings.detach().clone(), freeze=False)
        self.lstm = nn.LSTM(embeddings.shape[1], hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, num_layers)
        self.token_level = token_level

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        lengths = attention_mask.sum(1).cpu()
        packed = pack_padded_sequence(self.embed(input_ids), lengths, batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=input_ids.shape[1])
        if self.token_level:
            return self.out(states)  # [b, s, L]
        return self.out(masked_mean(states, attention_mask))  # [b, L]


class EncoderPredictor(nn.Module):
    """The fine-tuned backbone ("BERT" row) with a linear layer to L logits, on the mean-pooled
    last layer (sentence level) or on every token (``token_level``)."""

    def __init__(self, backbone: nn.Module, num_layers: int, token_level: bool = False, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter_for(backbone)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(self.adapter.hidden_size, num_layers)
        self.token_level = token_level

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                **_) -> torch.Tensor:
        hidden = self.adapter.encode(input_ids, attention_mask, token_type_ids)
        if self.token_level:
            return self.out(self.dropout(hidden))
        return self.out(self.dropout(masked_mean(hidden, attention_mask)))


IGNORE = -100  # label of sub-tokens that carry none (continuations, specials, padding)


def predictor_loss(predictor: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Linear-M: CE over exit outcomes; every other predictor: multi-label BCE on labelled positions."""
    if predictor == "linear_m":  # multinomial over exit outcomes
        return F.cross_entropy(logits, exit_outcome(labels))
    mask = labels != IGNORE
    return F.binary_cross_entropy_with_logits(logits[mask], labels[mask].float())


def predicted_bits(predictor: str, logits: torch.Tensor) -> torch.Tensor:
    return LinearM.to_bits(logits) if predictor == "linear_m" else (logits >= 0).long()


@torch.no_grad()
def predict_bits(model: nn.Module, predictor: str, batches: Iterable[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(gold, predicted)`` bits ``[items, L]`` over ``batches``; token level keeps first sub-tokens."""
    model.eval()
    gold, pred = [], []
    for batch in batches:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"})
        labels, bits = batch["labels"], predicted_bits(predictor, logits)
        if labels.dim() == 3:  # token level: keep first sub-tokens
            keep = labels[..., 0] != IGNORE
            labels, bits = labels[keep], bits[keep]
        gold.append(labels.cpu())
        pred.append(bits.cpu())
    return torch.cat(gold).numpy(), torch.cat(pred).numpy()


def item_batches(states: torch.Tensor, labels: torch.Tensor, order: list[int], device: torch.device | str = "cpu",
                 size: int = 256) -> Iterable[dict[str, torch.Tensor]]:
    """Linear-B batches over precomputed states in ``order``: ``{"states": [L, b, d], "labels": [b, L]}``.

    Args:
        states: ``[n, L, d]`` the annotator's state per item and layer.
        labels: ``[n, L]`` difficulty bits.
    """
    for start in range(0, len(order), size):
        idx = torch.tensor(order[start:start + size])
        yield {"states": states[idx].transpose(0, 1).to(device), "labels": labels[idx].to(device)}


def fit_predictor(model: nn.Module, predictor: str, train_batches: Callable[[int], Iterable[dict]],
                  dev_batches: Callable[[], Iterable[dict]], epochs: int, lr: float,
                  progress: Callable[[Iterable, int], Iterable] = lambda batches, epoch: batches) -> tuple[list[dict], dict]:
    """Train a difficulty predictor (AdamW, weight decay 0.01, grad-norm clip 1.0) and keep the
    epoch with the best negative-label F1 on predictor-dev (undefined F1 counts as 0).

    ``train_batches(epoch)`` yields that epoch's (oversampled, shuffled) batches. The model ends
    with the selected epoch's weights. Returns ``(history, best)``: one record per epoch, and
    ``{"epoch", "dev"}`` of the selected one.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    history: list[dict] = []
    best = {"score": -1.0, "state": None, "epoch": None, "dev": None}
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = 0.0, 0
        for batch in progress(train_batches(epoch), epoch):
            logits = model(**{k: v for k, v in batch.items() if k != "labels"})
            loss = predictor_loss(predictor, logits, batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total, count = total + loss.item(), count + 1
        dev = difficulty_metrics(*predict_bits(model, predictor, dev_batches()))
        history.append({"epoch": epoch, "train_loss": total / max(1, count), "dev_f1": dev["f1"],
                        "dev_precision": dev["precision"], "dev_recall": dev["recall"], "dev_accuracy": dev["accuracy"]})
        score = dev["f1"] if dev["f1"] is not None else 0.0
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "dev": dev,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    model.load_state_dict(best["state"])
    return history, {"epoch": best["epoch"], "dev": best["dev"]}


def train_classifier_epoch(model: nn.Module, batches: Iterable[dict], optimizer: torch.optim.Optimizer) -> None:
    """One pass of cross-entropy on ``labels`` (the human-difficulty classifier, paper Figure 1)."""
    for batch in batches:
        loss = F.cross_entropy(model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def classifier_accuracy(model: nn.Module, batches: Iterable[dict]) -> float:
    """Accuracy (percent) of ``model``'s argmax over ``batches`` (eval mode)."""
    model.eval()
    right, rows = 0, 0
    for batch in batches:
        right += (model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).argmax(-1)
                  == batch["labels"]).sum().item()
        rows += len(batch["labels"])
    return 100.0 * right / rows


def fit_classifier(model: nn.Module, train_batches: Callable[[int], Iterable[dict]],
                   eval_batches: dict[str, Callable[[], Iterable[dict]]], epochs: int, lr: float,
                   on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train the human-difficulty classifier (AdamW, weight decay 0.01) for ``epochs``, without
    selection; after each epoch the accuracy on every ``eval_batches`` split.

    Returns ``[{"epoch", "<split>_accuracy", ...}]``; ``on_epoch`` gets each record.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        train_classifier_epoch(model, train_batches(epoch), optimizer)
        history.append({"epoch": epoch, **{f"{split}_accuracy": classifier_accuracy(model, make())
                                           for split, make in eval_batches.items()}})
        if on_epoch is not None:
            on_epoch(history[-1])
    return history
