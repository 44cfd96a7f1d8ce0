"""DPO variants that TRL's ``DPOTrainer`` carries as ``loss_type`` values: sorted (AOT), DiscoPOP,
length-normalised, and BCO without a reward shift.

Each is checked against TRL 1.16's implementation on fixed log-probs (tests/test_losses_trl.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register


def _smoothed(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


@register("aot", log_probs="sum", source="Melnyk et al. 2024, Distributional Preference Alignment via Optimal Transport (AOT, paired)")
def aot(batch: PreferenceBatch, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOutput:
    """-log σ(β·Δ_(k)) with Δ_(k) = sort(logp_w - logp_l)_k - sort(ref_w - ref_l)_k: DPO on sorted margins.

    Summed log-probs. AOT aligns the *distributions* of policy and reference margins over
    the batch (first-order stochastic dominance, solved in 1-D by sorting), so the k-th loss
    belongs to the k-th smallest margin, not to pair k; ε = label_smoothing as in cDPO.
    """
    chosen_logratio, rejected_logratio = batch.logratios()
    policy_sorted, _ = torch.sort(batch.policy_chosen_logps - batch.policy_rejected_logps, dim=0)
    reference_sorted, _ = torch.sort(batch.reference_chosen_logps - batch.reference_rejected_logps, dim=0)
    losses = _smoothed(beta * (policy_sorted - reference_sorted), label_smoothing)
    return LossOutput(losses, beta * chosen_logratio, beta * rejected_logratio)


@register("aot-unpaired", log_probs="sum", source="Melnyk et al. 2024, Distributional Preference Alignment via Optimal Transport (AOT, unpaired)")
def aot_unpaired(batch: PreferenceBatch, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOutput:
    """-log σ(β·(sort(logp_w - ref_w)_k - sort(logp_l - ref_l)_k)): chosen and rejected log-ratios sorted apart.

    Summed log-probs. For unpaired data: the chosen log-ratios' distribution must dominate
    the rejected ones'; the k-th loss compares the k-th smallest of each.
    """
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_sorted, _ = torch.sort(chosen_logratio, dim=0)
    rejected_sorted, _ = torch.sort(rejected_logratio, dim=0)
    losses = _smoothed(beta * (chosen_sorted - rejected_sorted), label_smoothing)
    return LossOutput(losses, beta * chosen_logratio, beta * rejected_logratio)


@register("discopop", log_probs="sum", source="Lu et al. 2024, Discovering Preference Optimization Algorithms (DiscoPOP, LRML, Eq. 5)")
def discopop(batch: PreferenceBatch, *, beta: float = 0.1, tau: float = 0.05) -> LossOutput:
    """(1 - σ(h/τ))·(-log σ(h)) + σ(h/τ)·exp(-h), h = β[(logp_w - ref_w) - (logp_l - ref_l)].

    Summed log-probs. The log-ratio modulated loss an LLM discovered: a blend of the
    logistic (DPO) and exponential losses, the weight set by the margin itself (τ = TRL's
    discopop_tau, 0.05).
    """
    chosen_logratio, rejected_logratio = batch.logratios()
    h = beta * (chosen_logratio - rejected_logratio)
    modulation = torch.sigmoid(h / tau)
    losses = -F.logsigmoid(h) * (1 - modulation) + torch.exp(-h) * modulation
    return LossOutput(losses, beta * chosen_logratio, beta * rejected_logratio)


@register("sigmoid-norm", log_probs="mean", source="Lambert et al. 2024, Tülu 3 (length-normalised DPO); TRL loss_type sigmoid_norm")
def sigmoid_norm(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(β[(logp_w - ref_w)/|y_w| - (logp_l - ref_l)/|y_l|]): DPO on per-token log-ratios.

    Length-averaged log-probs (policy and reference alike); rewards are β times the
    per-token log-ratios.
    """
    chosen_logratio, rejected_logratio = batch.mean_logratios()
    chosen_rewards, rejected_rewards = beta * chosen_logratio, beta * rejected_logratio
    return LossOutput(-F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards)


@register("bco-pair", log_probs="sum", source="Jung et al. 2024, Binary Classifier Optimization, without the reward shift (TRL 1.16 bco_pair)")
def bco_pair(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(r_w) - log σ(-r_l), r = β(logp - ref): BCO's two binary classifiers with the shift δ = 0.

    Summed log-probs. This is TRL 1.16's bco_pair. The BCO paper itself shifts both rewards
    by δ, a running mean of the rewards over training (its reward shift); dpo3d's ``bco``
    keeps a shift (the batch's mean reward, detached), ``bco-pair`` is the shift-free form.
    """
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_rewards, rejected_rewards = beta * chosen_logratio, beta * rejected_logratio
    return LossOutput(-F.logsigmoid(chosen_rewards) - F.logsigmoid(-rejected_rewards), chosen_rewards, rejected_rewards)
