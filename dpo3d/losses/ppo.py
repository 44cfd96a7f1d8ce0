"""RLHF-PPO's pieces as pure functions of per-token tensors (Schulman et al. 2017; Ouyang et al. 2022).

Every tensor is ``(batch, response_tokens)``, right-padded, with ``mask`` 1 on
real response tokens. Conventions follow "The N implementation details of RLHF
with PPO" (Huang et al. 2024): the KL penalty is paid per token, the sequence's
score arrives on its last token, GAE runs backwards over the response, the
advantages are whitened over the batch, and both the policy ratio and the
value prediction are clipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp_min(1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  total: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(x - mean) / std over the masked entries (std unbiased); ``shift_mean=False`` keeps the mean.

    ``total`` sums a tensor over every process's batch, so data-parallel PPO whitens over the global batch
    (as one process holding all of it would); without it, over this batch alone.
    """
    total = total or (lambda tensor: tensor)
    mask = mask.to(values.dtype)
    count = total(mask.sum())
    mean = total((values * mask).sum()) / count.clamp_min(1)
    n = count.clamp_min(2)
    variance = total((((values - mean) ** 2) * mask).sum()) / (n - 1)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_penalised_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``-kl_coef·(log π - log π_ref)``, plus each sequence's score on its last token.

    Returns (rewards, per-token KL estimate ``log π - log π_ref``), both zero off the mask.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp_min(0)
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation backwards over each response; returns (advantages, returns).

    δ_t = r_t + γ·V_{t+1} - V_t with V past the last token = 0; A_t = δ_t + γλ·A_{t+1}; returns = A + V.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    width = rewards.shape[1]
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens whose ratio left [1-ε, 1+ε] in the direction that counts
    approx_kl: torch.Tensor  # E[(ratio - 1) - log ratio] (Schulman's k3), old -> new policy


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> PolicyLossOutput:
    """PPO's clipped surrogate: mean over tokens of max(-A·ρ, -A·clip(ρ, 1-ε, 1+ε))."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return PolicyLossOutput(loss, clip_fraction, approx_kl)


@dataclass
class ValueLossOutput:
    loss: torch.Tensor
    clip_fraction: torch.Tensor


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> ValueLossOutput:
    """½·mean max((V - R)², (clip(V, V_old ± ε) - R)²): the value may not move more than ε per rollout."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return ValueLossOutput(loss, clip_fraction)
