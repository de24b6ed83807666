"""ConsistentEE: early exiting as reinforcement learning, consistent in training and inference
(Zeng et al., AAAI 2024; arXiv 2312.11882).

Paper map:

| paper                                         | code                                   |
| --------------------------------------------- | -------------------------------------- |
| policy network pi(a | s_t), one per layer      | ``PolicyNetworks`` (layers 1..L-1)      |
| trajectories with repeated sampling, eps-greedy | ``sample_trajectories``               |
| R_vanilla = -H(y, P_t) - alpha * t (Eq. 3)    | ``exit_rewards(..., memorized=None)``   |
| R = -H(y, P_t) - alpha (1 - M / L) t (Eq. 4)  | ``exit_rewards(..., memorized=M)``      |
| policy objective (Eq. 5)                      | ``policy_loss`` (REINFORCE, K-copy mean baseline) |
| task loss, CE at the exit layer only (Eq. 6)  | ``exit_task_loss``                      |
| memorized layer M (Eq. 7)                     | ``memorized_layer``                     |
| forgetting events (Table 1, Toneva et al.)    | ``forgetting_events``                   |
| iterative training steps (3) and (4)          | ``train_policy_epoch``, ``train_heads_epoch`` |
| "until convergence": dev trade-off            | ``policy_objective``                    |

Shape notation: L = layers (= exits), n = instances, K = sampled copies per instance,
N = n * K trajectories, d = hidden. Layers are 1-based; layer L always exits (no decision,
no log-prob term).
"""

from __future__ import annotations

from typing import Callable, ClassVar, Iterable

import torch
from torch import nn

from models.criteria import ScoreThreshold, register_criterion, simulate
from models.exit_heads import task_loss
from models.metrics import correct_predictions
from models.registry import ExitScorer, register_scorer
from models.training import build_optimizer, linear_schedule


@register_scorer("policy")
class PolicyNetworks(ExitScorer):
    """One ``Linear(d, 32) -> GELU -> Linear(32, 1) -> sigmoid`` per layer 1..L-1: pi(exit | s_k).

    Trained only by REINFORCE (``policy_step_loss``): no term in the multi-exit objectives.
    """

    def __init__(self, hidden_size: int, num_layers: int, inner: int = 32):
        super().__init__()
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_size, inner), nn.GELU(), nn.Linear(inner, 1)) for _ in range(num_layers - 1)
        )

    def forward(self, layer: int, state: torch.Tensor) -> torch.Tensor:
        """Exit probability at 1-based ``layer`` for ``state [b, d]`` -> ``[b]``; 1 at the last layer."""
        if layer > len(self.nets):
            return torch.ones(state.shape[0], dtype=state.dtype, device=state.device)
        return torch.sigmoid(self.nets[layer - 1](state)).squeeze(-1)

    def flops_at(self, layer: int, num_layers: int) -> int:
        if layer >= num_layers:
            return 0  # no decision (and no policy net) at the last layer
        first, second = self.nets[0][0], self.nets[0][2]
        return 2 * (first.in_features * first.out_features + second.in_features * second.out_features)


@register_criterion
class PolicyExit(ScoreThreshold):
    """ConsistentEE: exit when the policy's exit probability ``pi_k > tau`` (default tau = 0.5)."""

    name: ClassVar[str] = "policy"
    module: ClassVar[str] = "policy"
    requirement: ClassVar[str] = "a ConsistentEE model (policy networks)"

    def fires(self, certainty):
        return certainty > self.threshold


def memorized_layer(correct: torch.Tensor) -> torch.Tensor:
    """Eq. 7: smallest k such that heads k..L are all correct; L when head L is wrong.

    Args:
        correct: ``[L, n]`` bool, head k's prediction is right for instance i.
    Returns:
        ``[n]`` long, 1-based memorized layer.
    """
    num_layers = correct.shape[0]
    # trailing run of correct heads, counted from the last layer down
    trailing = torch.cumprod(correct.flip(0).long(), dim=0).sum(0)  # [n]
    return (num_layers - trailing + 1).clamp(max=num_layers)


def forgetting_events(correct: torch.Tensor) -> torch.Tensor:
    """Per-instance count of forgetting events over successive evaluations (Toneva et al. 2019):
    correct at evaluation e - 1 and wrong at evaluation e.

    Args:
        correct: ``[E, n]`` bool, in evaluation order.
    Returns:
        ``[n]`` long.
    """
    return (correct[:-1] & ~correct[1:]).sum(0)


def sample_trajectories(exit_prob: torch.Tensor, epsilon: float, generator: torch.Generator | None = None):
    """Sample one trajectory per column of ``exit_prob [L, N]`` and return its exit layer and log-prob.

    At each layer t < L the action is Exit with probability pi_t, except that with probability
    ``epsilon`` it is a uniformly random action (exploration); a row stops at its first Exit,
    and every row still running exits at L. The log-probability sums log pi(a_t | s_t) over the
    decisions actually taken (layers 1..T, excluding the forced exit at L).

    Returns:
        ``(exit_layer [N] long, log_prob [N])``; ``log_prob`` carries the policy's gradient.
    """
    num_layers, n = exit_prob.shape
    p = exit_prob[:-1]  # [L-1, N] decisions exist only before the last layer
    draw = torch.rand(p.shape, generator=generator, device=p.device)
    explore = torch.rand(p.shape, generator=generator, device=p.device) < epsilon
    coin = torch.rand(p.shape, generator=generator, device=p.device) < 0.5
    exits = torch.where(explore, coin, draw < p.detach())  # [L-1, N] bool
    any_exit = exits.any(0)
    first = exits.long().argmax(0) + 1  # 1-based first exit (argmax returns the first max)
    exit_layer = torch.where(any_exit, first, torch.full_like(first, num_layers))
    steps = torch.arange(1, num_layers, device=p.device)[:, None]  # [L-1, 1]
    taken = steps <= exit_layer[None, :]  # decisions made (continue ... exit), never at L
    eps = 1e-8
    log_pi = torch.where(steps == exit_layer[None, :], torch.log(p + eps), torch.log(1 - p + eps))
    return exit_layer, (log_pi * taken).sum(0)


def exit_rewards(exit_loss: torch.Tensor, exit_layer: torch.Tensor, alpha: float, num_layers: int,
                 memorized: torch.Tensor | None = None) -> torch.Tensor:
    """Reward at the exit layer t: ``-loss - alpha * t`` (vanilla, Eq. 3) or, given the memorized
    layer M, ``-loss - alpha * (1 - M / L) * t`` (hardness-guided, Eq. 4). ``loss`` is CE (or
    squared error for regression) of the exit head. All ``[N]``.
    """
    weight = alpha if memorized is None else alpha * (1.0 - memorized.float() / num_layers)
    return -exit_loss - weight * exit_layer.float()


def policy_loss(rewards: torch.Tensor, log_prob: torch.Tensor, copies: int) -> torch.Tensor:
    """REINFORCE with the mean reward over the K copies of an instance as baseline (Eq. 5).

    ``rewards`` and ``log_prob`` are ``[n * K]`` laid out instance-major (copy index fastest).
    Returns ``-mean(advantage * log_prob)``; advantages are constants.
    """
    r = rewards.detach().view(-1, copies)
    advantage = (r - r.mean(1, keepdim=True)).view(-1)
    return -(advantage * log_prob).mean()


def exit_task_loss(logits: torch.Tensor, labels: torch.Tensor, exit_layer: torch.Tensor, regression: bool) -> torch.Tensor:
    """Eq. 6: each row's loss at its own exit layer only, averaged. ``logits [L, n, c]``."""
    per_layer = task_loss(logits, labels, regression)  # [L, n]
    return per_layer.gather(0, (exit_layer - 1)[None, :]).mean()


def epsilon_at(step: int, total_steps: int, start: float = 0.2, end: float = 0.0) -> float:
    """Linearly decaying exploration rate over policy-training steps."""
    if total_steps <= 1:
        return end
    return start + (end - start) * min(step, total_steps - 1) / (total_steps - 1)


def policy_step_loss(model, batch: dict, copies: int, alpha: float, epsilon: float,
                     memorized: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """Step (3): REINFORCE loss for the policy networks only; backbone and heads are frozen.

    Each instance is replicated ``copies`` times; trajectories are sampled with exploration
    ``epsilon``; the reward is vanilla, or hardness-guided when ``memorized [b]`` is given.

    Returns ``(loss, info)`` with the mean reward and mean sampled exit layer.
    """
    if model.config.scorer != "policy":
        raise ValueError("policy_step_loss needs a model with policy networks (MultiExitConfig(scorer=\"policy\"))")
    with torch.no_grad():  # frozen backbone and heads: states and logits are constants
        out = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    logits, states = out.logits, out.states  # [L, b, c], [L, b, d]
    num_layers = logits.shape[0]
    prob = model.policy.all_layers(states).repeat_interleave(copies, dim=1)  # [L, b*K], copy index fastest
    exit_layer, log_prob = sample_trajectories(prob, epsilon, generator)
    labels = batch["labels"].repeat_interleave(copies)
    per_layer = task_loss(logits.repeat_interleave(copies, dim=1), labels, model.config.regression)  # [L, b*K]
    exit_loss = per_layer.gather(0, (exit_layer - 1)[None, :]).squeeze(0)
    m = memorized.repeat_interleave(copies) if memorized is not None else None
    rewards = exit_rewards(exit_loss, exit_layer, alpha, num_layers, m)
    loss = policy_loss(rewards, log_prob, copies)
    return loss, {"reward": rewards.mean().item(), "exit_layer": exit_layer.float().mean().item()}


def heads_step_loss(model, batch: dict, generator: torch.Generator | None = None):
    """Step (4): Eq. 6 loss for backbone and heads with the policy frozen.

    Exit layers are sampled from the frozen policy (on-policy, no exploration), so each
    instance trains the head it would exit at.
    """
    out = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    exit_layer, _ = sample_trajectories(out.scores["policy"].detach(), 0.0, generator)
    return exit_task_loss(out.logits, batch["labels"], exit_layer, model.config.regression), exit_layer


def train_policy_epoch(model, batches: Iterable[dict], optimizer: torch.optim.Optimizer, copies: int, alpha: float,
                       epsilons: list[float], hardness: bool, generator: torch.Generator | None = None,
                       max_grad_norm: float = 1.0) -> dict:
    """Step (3) over one pass of ``batches``: REINFORCE on the policy networks only.

    Backbone and heads run in eval mode under ``no_grad`` (frozen, deterministic states); the
    optimizer must hold only policy parameters. ``epsilons[i]`` is the exploration rate of
    batch i. Batches carry ``memorized [b]`` when ``hardness`` (Eq. 4); else Eq. 3.

    Returns mean ``loss``, ``reward`` and sampled ``exit_layer`` over the pass.
    """
    model.eval()
    totals = {"loss": 0.0, "reward": 0.0, "exit_layer": 0.0}
    count = 0
    for i, batch in enumerate(batches):
        memorized = batch["memorized"] if hardness else None
        loss, info = policy_step_loss(model, batch, copies, alpha, epsilons[min(i, len(epsilons) - 1)], memorized, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.policy.parameters(), max_grad_norm)
        optimizer.step()
        totals["loss"] += loss.item()
        totals["reward"] += info["reward"]
        totals["exit_layer"] += info["exit_layer"]
        count += 1
    return {k: v / max(1, count) for k, v in totals.items()}


def train_heads_epoch(model, batches: Iterable[dict], optimizer: torch.optim.Optimizer, scheduler,
                      generator: torch.Generator | None = None, max_grad_norm: float = 1.0) -> dict:
    """Step (4) over one pass of ``batches``: Eq. 6 on backbone and heads, policy frozen.

    The optimizer must not hold policy parameters; their ``requires_grad`` is switched off for
    the pass. Returns the mean ``loss`` and mean sampled ``exit_layer``.
    """
    model.train()
    for p in model.policy.parameters():
        p.requires_grad_(False)
    total, layers, count = 0.0, 0.0, 0
    try:
        for batch in batches:
            loss, exit_layer = heads_step_loss(model, batch, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"ConsistentEE heads step: loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_grad_norm)
            optimizer.step()
            scheduler.step()
            total += loss.item()
            layers += exit_layer.float().mean().item()
            count += 1
    finally:
        for p in model.policy.parameters():
            p.requires_grad_(True)
    return {"loss": total / max(1, count), "exit_layer": layers / max(1, count)}


def fit_policy(model, epoch_batches: Callable[[int], Iterable[dict]], steps_per_epoch: int, epochs: int, lr: float,
               copies: int, alpha: float, epsilon_start: float, epsilon_end: float, hardness: bool,
               generator: torch.Generator | None = None, max_grad_norm: float = 1.0,
               on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Step (3) of a round: ``epochs`` passes of ``train_policy_epoch`` with a fresh AdamW on the
    policy networks and epsilon decaying linearly from ``epsilon_start`` to ``epsilon_end`` over
    all ``steps_per_epoch * epochs`` steps (``epsilon_at``).

    ``epoch_batches(epoch)`` yields that epoch's batches; ``on_epoch(epoch, info)`` follows each.
    Returns the last epoch's ``info`` (mean ``loss``, ``reward``, ``exit_layer``).
    """
    optimizer = torch.optim.AdamW(model.policy.parameters(), lr=lr)
    total = steps_per_epoch * epochs
    epsilons = [epsilon_at(i, total, epsilon_start, epsilon_end) for i in range(total)]
    info = {}
    for epoch in range(1, epochs + 1):
        info = train_policy_epoch(model, epoch_batches(epoch), optimizer, copies, alpha,
                                  epsilons[(epoch - 1) * steps_per_epoch: epoch * steps_per_epoch], hardness, generator,
                                  max_grad_norm)
        if on_epoch is not None:
            on_epoch(epoch, info)
    return info


def fit_heads(model, epoch_batches: Callable[[int], Iterable[dict]], steps_per_epoch: int, epochs: int, lr: float,
              weight_decay: float, warmup_ratio: float, generator: torch.Generator | None = None,
              max_grad_norm: float = 1.0, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Step (4) of a round: ``epochs`` passes of ``train_heads_epoch`` with a fresh AdamW on
    everything but the policy (``lr`` warmed up over ``warmup_ratio`` of the steps, then decayed to 0).

    ``epoch_batches(epoch)`` yields that epoch's batches; ``on_epoch(epoch, info)`` follows each.
    Returns the last epoch's ``info`` (mean ``loss``, ``exit_layer``).
    """
    optimizer = build_optimizer(model, lr, weight_decay, exclude="policy.")
    total = steps_per_epoch * epochs
    scheduler = linear_schedule(optimizer, int(warmup_ratio * total), total)
    info = {}
    for epoch in range(1, epochs + 1):
        info = train_heads_epoch(model, epoch_batches(epoch), optimizer, scheduler, generator, max_grad_norm)
        if on_epoch is not None:
            on_epoch(epoch, info)
    return info


def policy_objective(logits: torch.Tensor, certainty: torch.Tensor, labels: torch.Tensor, tau: float, alpha: float,
                     regression: bool, hardness: bool, tolerance: float = 0.5) -> dict:
    """The deterministic policy (exit when pi > tau) scored by its own reward on a recorded pass.

    ``logits [L, n, c]``, ``certainty [L, n]`` (pi, last row 1), ``labels [n]``. The hardness
    reward uses the memorized layer of these same rows. Returns ``objective`` (mean reward,
    higher is better: what "the dev trade-off improves" means between rounds), ``avg_exit_layer``
    and ``correct`` (share of rows right at their exit).
    """
    num_layers = logits.shape[0]
    exit_layer, exit_logits = simulate(PolicyExit(tau), logits, {"policy": certainty})
    per_layer = task_loss(logits, labels, regression)  # [L, n]
    exit_loss = per_layer.gather(0, (exit_layer - 1)[None, :]).squeeze(0)
    memorized = memorized_layer(correct_predictions(logits, labels, regression, tolerance)) if hardness else None
    rewards = exit_rewards(exit_loss, exit_layer, alpha, num_layers, memorized)
    right = correct_predictions(exit_logits, labels, regression, tolerance)
    return {"objective": rewards.mean().item(), "avg_exit_layer": exit_layer.float().mean().item(),
            "correct": right.float().mean().item()}
