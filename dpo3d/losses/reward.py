"""The reward model's Bradley-Terry loss, a pure function of the two scalar rewards.

Reward-model training is the paper's contrast to DPO (§4, Fig. 4): its loss
``-log σ(r_w - r_l - m)`` has gradients on the chosen and rejected rewards that
are always equal and opposite, ``∂L/∂r_w = -(1 - σ(Δ)) = -∂L/∂r_l``, so neither
side can run away the way DPO's rejected log-probability does (there the ratio
of the gradients is ``-x1/x2``). The gradients are returned with the loss so
training can log them and the contrast is visible in ``metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RewardLossOutput:
    """Per pair (shape ``(batch,)``): the loss, the margin ``r_w - r_l`` and ∂loss/∂r on each side."""

    losses: torch.Tensor
    margins: torch.Tensor
    grad_chosen: torch.Tensor
    grad_rejected: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        return self.losses.mean()


def bradley_terry_rm(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: float = 0.0) -> RewardLossOutput:
    """``-log σ(r_w - r_l - margin)`` per pair, with its analytic gradients on ``r_w`` and ``r_l``.

    ``margin`` (≥ 0) asks the chosen reward to lead by at least that much (Llama 2's margin loss).
    """
    if margin < 0:
        raise ValueError("the reward-model margin must be >= 0")
    margins = chosen_rewards - rejected_rewards
    shifted = margins - margin
    losses = -F.logsigmoid(shifted)
    push = torch.sigmoid(-shifted).detach()  # 1 - σ(Δ - m)
    return RewardLossOutput(losses, margins, -push, push)
