"""Losses that move each response's implicit reward on its own (not only their difference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register


def _rewards(batch: PreferenceBatch, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    chosen_logratio, rejected_logratio = batch.logratios()
    return beta * chosen_logratio, beta * rejected_logratio


@register("nca", log_probs="sum", source="Chen et al. 2024, Noise Contrastive Alignment (NCA)")
def nca(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(r_w) - ½·log σ(-r_w) - ½·log σ(-r_l), r = β(logp - ref). Summed log-probs."""
    chosen_rewards, rejected_rewards = _rewards(batch, beta)
    losses = -F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)
    return LossOutput(losses, chosen_rewards, rejected_rewards)


@register("apo-zero", log_probs="sum", source="D'Oosterlinck et al. 2024, Anchored Preference Optimization")
def apo_zero(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """(1 - σ(r_w)) + σ(r_l): raise the chosen, lower the rejected (chosen better than the model).

    Summed log-probs.
    """
    chosen_rewards, rejected_rewards = _rewards(batch, beta)
    return LossOutput(1 - torch.sigmoid(chosen_rewards) + torch.sigmoid(rejected_rewards), chosen_rewards, rejected_rewards)


@register("apo-down", log_probs="sum", source="D'Oosterlinck et al. 2024, Anchored Preference Optimization")
def apo_down(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """σ(r_w) + (1 - σ(r_w - r_l)): lower both, the rejected more (model better than the chosen).

    Summed log-probs.
    """
    chosen_rewards, rejected_rewards = _rewards(batch, beta)
    losses = torch.sigmoid(chosen_rewards) + 1 - torch.sigmoid(chosen_rewards - rejected_rewards)
    return LossOutput(losses, chosen_rewards, rejected_rewards)


@register("sppo-hard", log_probs="sum", source="Wu et al. 2024, Self-Play Preference Optimization (hard labels)")
def sppo_hard(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """(a - 1/(2β))² + (b + 1/(2β))², a = logp_w - ref_w, b = logp_l - ref_l. Summed log-probs."""
    chosen_logratio, rejected_logratio = batch.logratios()
    losses = (chosen_logratio - 0.5 / beta) ** 2 + (rejected_logratio + 0.5 / beta) ** 2
    return LossOutput(losses, beta * chosen_logratio, beta * rejected_logratio)


@register("bco", log_probs="sum", source="Jung et al. 2024, Binary Classifier Optimization (paired form)")
def bco(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(r_w - δ) - log σ(-(r_l - δ)), δ = mean of the batch's rewards (held constant).

    Summed log-probs. BCO's δ is a running mean of rewards over training; to keep
    the loss a pure function we use the current batch's mean, detached.
    """
    chosen_rewards, rejected_rewards = _rewards(batch, beta)
    shift = torch.cat([chosen_rewards, rejected_rewards]).mean().detach()
    losses = -F.logsigmoid(chosen_rewards - shift) - F.logsigmoid(-(rejected_rewards - shift))
    return LossOutput(losses, chosen_rewards, rejected_rewards)


@register(
    "cal-dpo",
    log_probs="sum",
    source=(
        "Xiao et al. 2024, Cal-DPO: Calibrated Direct Preference Optimization for Language Model Alignment "
        "(NeurIPS 2024), the Cal-DPO objective as in the authors' code (Cal-DPO/Cal-DPO, shift 0.5)"
    ),
    note=(
        "The calibration targets are for the log-ratios a, b (not for β·a): the paper aligns log(π/π_ref) with "
        "r/β for rewards r = ±1/2, so a -> 1/(2β), b -> -1/(2β) and the implicit rewards β·a, β·b go to ±1/2. "
        "The contrastive term is -log σ(a - b) without β, as in both of the authors' trainers (the paper's full "
        "text was not at hand to cite its equation); the loss is sppo-hard's plus that unscaled DPO term."
    ),
)
def cal_dpo(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(a - b) + (a - 1/(2β))² + (b + 1/(2β))², a = logp_w - ref_w, b = logp_l - ref_l: DPO plus calibration.

    Summed log-probs. The squared terms calibrate each implicit reward β·a, β·b to the
    ±1/2 of a pair's true rewards, so the chosen's reward must rise above zero on its own
    (the rejected alone cannot carry the margin). Rewards r = β·a, β·b.
    """
    chosen_logratio, rejected_logratio = batch.logratios()
    target = 0.5 / beta
    losses = (
        -F.logsigmoid(chosen_logratio - rejected_logratio)
        + (chosen_logratio - target) ** 2
        + (rejected_logratio + target) ** 2
    )
    return LossOutput(losses, beta * chosen_logratio, beta * rejected_logratio)
