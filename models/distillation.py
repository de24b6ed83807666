"""Self-distillation targets for a decoder: the full model's next-token distribution, top-k compressed; pure.

The teacher is the original full-depth model, teacher-forced over text (prefill mode). Storing
its whole distribution (49k floats per token for SmolLM2) over 100k tokens would take 20 GB, so
each position keeps the teacher's ``k`` most probable tokens and their log-probabilities; the
remaining mass ``r = 1 - sum_j p_j`` is one more bucket. The loss is the KL divergence between
the teacher and the student on these k + 1 buckets (the student's mass outside the teacher's
top k summed into one bucket), which is zero exactly when the student puts the teacher's
probabilities on the teacher's top k and the rest elsewhere:

    KL_k(p || q) = sum_j p_j (log p_j - log q_j) + r (log r - log(1 - sum_j q_j))

Agreement is the share of positions where the student's greedy token is the teacher's.

Shape notation: n = positions, k = kept tokens, V = vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_TINY = 1e-12


@dataclass
class TeacherTargets:
    """The teacher at ``n`` positions: ``top_ids [n, k]`` (long, most probable first) and
    ``top_logprobs [n, k]`` (float, log p of each)."""

    top_ids: torch.Tensor
    top_logprobs: torch.Tensor

    def __getitem__(self, index) -> "TeacherTargets":
        return TeacherTargets(self.top_ids[index], self.top_logprobs[index])

    @property
    def greedy(self) -> torch.Tensor:
        """The teacher's greedy next token ``[n]``."""
        return self.top_ids[:, 0]

    def rest_mass(self) -> torch.Tensor:
        """``r [n]``: the teacher's probability outside its top k."""
        return (1.0 - self.top_logprobs.float().exp().sum(-1)).clamp(min=0.0)


def top_k_targets(logits: torch.Tensor, k: int) -> TeacherTargets:
    """The teacher's top ``k`` tokens and log-probabilities from its logits ``[n, V]``."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    values, ids = logprobs.topk(min(k, logits.shape[-1]), dim=-1)
    return TeacherTargets(ids, values)


def top_k_kl(student_logits: torch.Tensor, teacher: TeacherTargets, reduction: str = "mean") -> torch.Tensor:
    """``KL_k(teacher || student)`` per position (module docstring), in nats.

    Args:
        student_logits: ``[n, V]``.
        teacher: targets at the same ``n`` positions.
        reduction: ``"mean"`` over positions, or ``"none"`` (``[n]``).
    """
    q = F.log_softmax(student_logits.float(), dim=-1)
    q_top = q.gather(-1, teacher.top_ids)  # [n, k]
    p_log = teacher.top_logprobs.float()
    p = p_log.exp()
    kl = (p * (p_log - q_top)).sum(-1)
    rest = teacher.rest_mass()
    q_rest_mass = (1.0 - q_top.exp().sum(-1)).clamp(min=_TINY)
    kl = kl + rest * (torch.log(rest.clamp(min=_TINY)) - torch.log(q_rest_mass))
    return kl.mean() if reduction == "mean" else kl


def agreement(student_logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``[n]`` bool: the student's greedy token equals ``reference [n]`` (e.g. ``TeacherTargets.greedy``)."""
    return student_logits.argmax(-1) == reference


def next_token_nll(logits: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the text's own next tokens: ``logits [n, V]``, ``next_ids [n]`` -> ``[n]``."""
    return F.cross_entropy(logits.float(), next_ids, reduction="none")
