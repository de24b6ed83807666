"""Task metrics (percent, higher is better) from scipy / scikit-learn.

- ``accuracy``: SST-2, SNLI, SciTail (and default for classification);
- ``acc_f1``: MRPC, mean of accuracy and F1 of the positive class;
- ``pearson_spearman``: STS-B, mean of Pearson and Spearman correlations.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score

METRICS = ("accuracy", "acc_f1", "pearson_spearman")


def predictions(logits: torch.Tensor, regression: bool) -> np.ndarray:
    """``[..., c]`` logits -> predicted class ids, or scalar predictions for regression."""
    return (logits.squeeze(-1) if regression else logits.argmax(-1)).detach().cpu().numpy()


def predictions_tensor(logits: torch.Tensor, regression: bool) -> torch.Tensor:
    """Like ``predictions`` but stays a tensor (long class ids, or float scalars)."""
    return (logits.squeeze(-1) if regression else logits.argmax(-1)).detach()


def task_score(metric: str, logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> float:
    """Score ``[n, c]`` logits against ``[n]`` labels with ``metric`` (in percent)."""
    pred, gold = predictions(logits, regression), labels.cpu().numpy()
    # float(): scipy returns numpy scalars of the inputs' dtype (float32 labels -> np.float32, not JSON-able)
    if metric == "accuracy":
        return float(100.0 * accuracy_score(gold, pred))
    if metric == "acc_f1":
        return float(50.0 * (accuracy_score(gold, pred) + f1_score(gold, pred)))
    if metric == "pearson_spearman":
        # constant predictions: correlation undefined -> 0. Tested exactly (np.ptp), not by np.std: a
        # float32 constant's std comes out ~1e-7, and scipy then returns NaN, which no check flags
        if np.ptp(pred) == 0 or np.ptp(gold) == 0:
            return 0.0
        score = 50.0 * (pearsonr(pred, gold).statistic + spearmanr(pred, gold).statistic)
        return float(score) if np.isfinite(score) else 0.0
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def layerwise_scores(metric: str, logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> list[float]:
    """Score when every row is forced to exit at layer k, for k = 1..L (``logits [L, n, c]``)."""
    return [task_score(metric, logits[k], labels, regression) for k in range(logits.shape[0])]


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor, regression: bool, tolerance: float = 0.5) -> torch.Tensor:
    """``[..., n, c]`` logits vs ``[n]`` labels -> ``[..., n]`` bool: class argmax equals the label,
    or for regression the absolute error is below ``tolerance`` (label units)."""
    return prediction_is_correct(predictions_tensor(logits, regression), labels, regression, tolerance)


def prediction_is_correct(pred: torch.Tensor, labels: torch.Tensor, regression: bool, tolerance: float = 0.5) -> torch.Tensor:
    """Predictions (class ids, or scalars for regression) vs ``[n]`` labels -> bool, same shape as ``pred``."""
    if regression:
        return (pred - labels.to(pred.dtype)).abs() < tolerance
    return pred == labels


def chance_check(metric: str, logits: torch.Tensor, labels: torch.Tensor, regression: bool, margin: float = 5.0) -> dict:
    """Is a model's exit better than knowing only the label distribution of the same rows?

    ``logits [n, c]`` of one exit, ``labels [n]``. The majority-class score is ``metric`` of the
    constant majority prediction (the mean for regression, whose correlation is undefined: 0);
    the chance-level loss is that of the label prior: its entropy (nats) for classification,
    the label variance (squared error of the mean) for regression. ``at_chance`` is true when
    the score does not beat the majority class, or when it beats it by less than ``margin``
    points while the loss does not beat the prior's (a model that learned but is overconfident
    can have a loss above the prior's; it is not flagged).
    """
    y = labels.detach().cpu()
    logits = logits.detach().cpu().float()
    if regression:
        constant = torch.full((len(y), 1), float(y.float().mean()))
        chance_loss = float(((y.float() - y.float().mean()) ** 2).mean())
        loss = float(((logits.squeeze(-1) - y.float()) ** 2).mean())
    else:
        prior = torch.bincount(y, minlength=logits.shape[-1]).double() / len(y)
        constant = torch.nn.functional.one_hot(prior.argmax().repeat(len(y)), logits.shape[-1]).float()
        chance_loss = float(-(prior[prior > 0] * prior[prior > 0].log()).sum())
        loss = float(torch.nn.functional.cross_entropy(logits, y))
    score, majority = task_score(metric, logits, y, regression), task_score(metric, constant, y, regression)
    return {"score": score, "majority_score": majority, "loss": loss, "chance_loss": chance_loss,
            "at_chance": bool(score <= majority or (loss >= chance_loss and score < majority + margin))}
