"""Losses that push the log-ratio margin to a target (squared or hinge) instead of to infinity."""

from __future__ import annotations

import torch

from .registry import LossOutput, PreferenceBatch, register


@register("ipo", log_probs="mean", source="Azar et al. 2024, A General Theoretical Paradigm (IPO)")
def ipo(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """(m - 1/(2τ))², m = (logp_w - ref_w)/|y_w| - (logp_l - ref_l)/|y_l|, τ = --beta.

    Length-averaged log-probs, as IPO's authors use them (for one-token responses
    this is the summed form). Both gradients vanish once the margin hits 1/(2τ).
    """
    chosen_logratio, rejected_logratio = batch.mean_logratios()
    margin = chosen_logratio - rejected_logratio
    return LossOutput((margin - 1 / (2 * beta)) ** 2, beta * chosen_logratio, beta * rejected_logratio)


@register("hinge", log_probs="sum", source="Zhao et al. 2023 (SLiC) with a reference, as in Liu et al. 2024 (RSO)")
def hinge(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """max(0, 1 - h), h = β[(logp_w - ref_w) - (logp_l - ref_l)]. Summed log-probs."""
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_rewards, rejected_rewards = beta * chosen_logratio, beta * rejected_logratio
    return LossOutput(torch.relu(1 - (chosen_rewards - rejected_rewards)), chosen_rewards, rejected_rewards)


@register("slic", log_probs="sum", needs_reference=False, source="Zhao et al. 2023, SLiC-HF")
def slic(batch: PreferenceBatch, *, delta: float = 1.0, sft_weight: float = 0.1) -> LossOutput:
    """max(0, δ - logp_w + logp_l) - λ·logp_w: rank calibration plus the SFT regulariser on the chosen.

    Summed log-probs, no reference (δ = --delta, λ = --sft-weight); rewards are the log-probs.
    The paper's δ, λ were lost from its text; δ=1, λ=0.1 are our defaults.
    """
    calibration = torch.relu(delta - batch.policy_chosen_logps + batch.policy_rejected_logps)
    losses = calibration - sft_weight * batch.policy_chosen_logps
    return LossOutput(losses, batch.policy_chosen_logps, batch.policy_rejected_logps)
