"""Losses built on the Bradley-Terry likelihood ``-log σ(margin)`` of the pair."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register


def _dpo_margin(batch: PreferenceBatch, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_rewards, rejected_rewards = beta * chosen_logratio, beta * rejected_logratio
    return chosen_rewards - rejected_rewards, chosen_rewards, rejected_rewards


@register("dpo", log_probs="sum", source="Rafailov et al. 2023, Direct Preference Optimization")
def dpo(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(h), h = β[(logp_w - ref_w) - (logp_l - ref_l)].

    Summed log-probs. Implicit rewards r = β(logp - ref).
    """
    h, chosen_rewards, rejected_rewards = _dpo_margin(batch, beta)
    return LossOutput(-F.logsigmoid(h), chosen_rewards, rejected_rewards)


@register("flex", log_probs="sum", source="Yan et al. 2025 (3D-properties), §3.3 and App. B.2.1: flex-β DPO")
def flex(batch: PreferenceBatch, *, beta_chosen: float = 0.1, beta_rejected: float = 0.05) -> LossOutput:
    """-log σ(β_w(logp_w - ref_w) - β_l(logp_l - ref_l)), with β_l < β_w to slow the rejected drop.

    Summed log-probs. The gradient ratio becomes -(β_l/β_w)(x1/x2).
    """
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_rewards, rejected_rewards = beta_chosen * chosen_logratio, beta_rejected * rejected_logratio
    return LossOutput(-F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards)


@register("dpo-sft", log_probs="sum", source="Yan et al. 2025, §3.3 and App. B.2.2; RPO (Pang et al. 2024)")
def dpo_sft(batch: PreferenceBatch, *, beta: float = 0.1, sft_weight: float = 1.0) -> LossOutput:
    """-log σ(h) - α·logp_w/|y_w|: DPO plus a per-token NLL (SFT) term on the chosen response.

    DPO part on summed log-probs; the SFT term is length-averaged (α = --sft-weight).
    ∂L/∂x1 gains -α/(|y_w|·x1), which does not vanish as x2 -> 0.
    """
    h, chosen_rewards, rejected_rewards = _dpo_margin(batch, beta)
    chosen_lengths, _ = batch.lengths()
    nll = -batch.policy_chosen_logps / chosen_lengths
    return LossOutput(-F.logsigmoid(h) + sft_weight * nll, chosen_rewards, rejected_rewards)


@register("cdpo", log_probs="sum", source="Mitchell 2023, 'A note on DPO with noisy preferences' (conservative DPO)")
def cdpo(batch: PreferenceBatch, *, beta: float = 0.1, label_smoothing: float = 0.1) -> LossOutput:
    """-(1-ε)·log σ(h) - ε·log σ(-h): DPO with labels flipped with probability ε.

    Summed log-probs; ε = --label-smoothing.
    """
    h, chosen_rewards, rejected_rewards = _dpo_margin(batch, beta)
    losses = -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    return LossOutput(losses, chosen_rewards, rejected_rewards)


@register("robust", log_probs="sum", source="Chowdhury et al. 2024, Provably Robust DPO (rDPO)")
def robust(batch: PreferenceBatch, *, beta: float = 0.1, label_smoothing: float = 0.1) -> LossOutput:
    """[(1-ε)·(-log σ(h)) - ε·(-log σ(-h))] / (1 - 2ε): unbiased DPO under label noise ε < 1/2.

    Summed log-probs; ε = --label-smoothing.
    """
    if not 0 <= label_smoothing < 0.5:
        raise ValueError("robust DPO needs 0 <= label_smoothing < 0.5")
    h, chosen_rewards, rejected_rewards = _dpo_margin(batch, beta)
    losses = ((1 - label_smoothing) * -F.logsigmoid(h) - label_smoothing * -F.logsigmoid(-h)) / (1 - 2 * label_smoothing)
    return LossOutput(losses, chosen_rewards, rejected_rewards)


@register("dpop", log_probs="sum", source="Pal et al. 2024, Smaug: DPO-Positive")
def dpop(batch: PreferenceBatch, *, beta: float = 0.1, dpop_lambda: float = 50.0) -> LossOutput:
    """-log σ(β[(logp_w - ref_w) - (logp_l - ref_l) - λ·max(0, ref_w - logp_w)]).

    Summed log-probs; the penalty fires only when the chosen log-prob falls below the reference's.
    """
    chosen_logratio, rejected_logratio = batch.logratios()
    penalty = dpop_lambda * torch.relu(-chosen_logratio)
    losses = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio - penalty))
    return LossOutput(losses, beta * chosen_logratio, beta * rejected_logratio)


@register("exo", log_probs="sum", source="Ji et al. 2024, Towards Efficient Exact Optimization (EXO-pair)")
def exo(batch: PreferenceBatch, *, beta: float = 0.1, label_smoothing: float = 1e-3) -> LossOutput:
    """σ(h)(log σ(h) - log(1-ε)) + σ(-h)(log σ(-h) - log ε): reverse KL from the ε-smoothed label.

    Summed log-probs; ε = --label-smoothing must lie in (0, 1/2).
    """
    if not 0 < label_smoothing < 0.5:
        raise ValueError("exo needs 0 < label_smoothing < 0.5")
    h, chosen_rewards, rejected_rewards = _dpo_margin(batch, beta)
    losses = torch.sigmoid(h) * (F.logsigmoid(h) - math.log(1 - label_smoothing)) + torch.sigmoid(-h) * (
        F.logsigmoid(-h) - math.log(label_smoothing)
    )
    return LossOutput(losses, chosen_rewards, rejected_rewards)


@register("simpo", log_probs="mean", needs_reference=False, source="Meng et al. 2024, SimPO")
def simpo(batch: PreferenceBatch, *, beta: float = 2.0, gamma: float = 0.5) -> LossOutput:
    """-log σ(β·logp_w/|y_w| - β·logp_l/|y_l| - γ): reference-free, length-normalised.

    Length-averaged log-probs; rewards are β·logp/|y|; γ = --gamma is the target margin.
    """
    chosen_lengths, rejected_lengths = batch.lengths()
    chosen_rewards = beta * batch.policy_chosen_logps / chosen_lengths
    rejected_rewards = beta * batch.policy_rejected_logps / rejected_lengths
    return LossOutput(-F.logsigmoid(chosen_rewards - rejected_rewards - gamma), chosen_rewards, rejected_rewards)


@register("rdpo", log_probs="sum", source="Park et al. 2024, Disentangling Length from Quality in DPO (R-DPO)")
def rdpo(batch: PreferenceBatch, *, beta: float = 0.1, alpha: float = 0.01) -> LossOutput:
    """-log σ(h + α(|y_w| - |y_l|)), h = β[(logp_w - ref_w) - (logp_l - ref_l)]: DPO with length regularisation.

    Summed log-probs; lengths in tokens. With a length penalty α|y| on the true reward,
    the implicit reward is β·log-ratio = r - α|y|, so the Bradley-Terry margin gains
    α(|y_w| - |y_l|): a longer chosen needs less of the policy's margin, and length stops
    paying (R-DPO's regularised objective; the sign follows from this derivation, the paper's
    text was not at hand to cite its equation number).
    """
    h, chosen_rewards, rejected_rewards = _dpo_margin(batch, beta)
    chosen_lengths, rejected_lengths = batch.lengths()
    return LossOutput(-F.logsigmoid(h + alpha * (chosen_lengths - rejected_lengths)), chosen_rewards, rejected_rewards)
