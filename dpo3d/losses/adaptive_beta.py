"""DPO with a β that adapts to the data: per batch (β-DPO, with its data filter) and per pair (ε-DPO).

Both papers keep state across steps (a moving average of the reward gap; a β updated after every
optimizer step). A registry loss is a pure function of its batch, so each is implemented in the
form that needs only the batch; each spec's note says what that leaves out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register


def _kept(gaps: torch.Tensor, rho: float) -> torch.Tensor:
    """0/1 per pair: the k = max(1, ⌊n(1-ρ)⌋) pairs whose gap lies nearest the batch's mean gap.

    Ties are broken by position (a stable sort: the earlier pair is kept).
    """
    n = gaps.shape[0]
    k = max(1, math.floor(round(n * (1 - rho), 9)))
    order = torch.sort((gaps - gaps.mean()).abs(), stable=True).indices
    keep = torch.zeros_like(gaps)
    keep[order[:k]] = 1
    return keep


@register(
    "beta-dpo",
    log_probs="sum",
    source="Wu et al. 2024, β-DPO: Direct Preference Optimization with Dynamic β (NeurIPS 2024), §4; the authors' code (junkangwu/beta-DPO)",
    note=(
        "Batch-level form. The paper's M0 (centre of the filter and reference of β) and the filter's σ are moving "
        "averages over training (m = 0.9); here M0 is the current batch's mean gap, their m -> 0 limit, so β moves "
        "only by how far the kept pairs' mean gap sits from the whole batch's (rho = 0 gives DPO exactly). The paper "
        "samples the kept pairs at random with Gaussian weights exp(-½((M_i - M0)/σ)²); here the k most probable "
        "(nearest M0) are kept, so the loss is deterministic and σ cancels. β_batch is clamped below at 1e-3 and held "
        "constant, as in the authors' code."
    ),
)
def beta_dpo(batch: PreferenceBatch, *, beta: float = 0.1, alpha: float = 0.6, rho: float = 0.2) -> LossOutput:
    """-(n/k)·m_i·log σ(β_b·h_i), β_b = β·(1 + α(mean_kept(M) - mean(M))), M = h = (logp_w - ref_w) - (logp_l - ref_l).

    Summed log-probs. The filter m_i keeps the k = max(1, ⌊n(1-ρ)⌋) pairs whose gap M_i lies
    nearest the batch's mean gap (the outliers at either end are dropped, ρ = the filtering
    ratio); the n/k makes the batch mean the mean over the kept pairs. β_b (held constant,
    clamped at 1e-3) rises when the kept pairs' gaps exceed the batch's, falls when they lie
    below. Rewards β·(logp - ref) with the base β, as the authors log them.
    """
    if not 0 <= rho < 1:
        raise ValueError("beta-dpo needs 0 <= rho < 1")
    chosen_logratio, rejected_logratio = batch.logratios()
    gaps = chosen_logratio - rejected_logratio
    detached = gaps.detach()
    keep = _kept(detached, rho)
    kept_mean = (detached * keep).sum() / keep.sum()
    beta_batch = torch.clamp(beta * (1 + alpha * (kept_mean - detached.mean())), min=1e-3)
    losses = -F.logsigmoid(beta_batch * gaps) * keep * (keep.numel() / keep.sum())
    return LossOutput(losses, beta * chosen_logratio, beta * rejected_logratio)


@register(
    "epsilon-dpo",
    log_probs="sum",
    source=(
        "Lee et al. 2025, KL Penalty Control via Perturbation for Direct Preference Optimization (ε-DPO, "
        "arXiv 2502.13177); the authors' code (oddqueue/e-dpo)"
    ),
    note=(
        "The paper decides each pair's step by the log-ratio logp_w - logp_l of the policies at β/(1±ε), built per "
        "token as (1±ε)·logits - ε·logits_ref and renormalised over the vocabulary. From sequence log-probs (no "
        "vocabulary normaliser) the perturbed log-ratios are L ± ε·h, so the monotone test reduces to the sign of h. "
        "The paper also moves the base β after every optimizer step by the batch's mean step (β <- β/(1 + ε·mean)); a "
        "pure loss cannot carry that, so β here stays the given one and only the per-pair β_i adapts."
    ),
)
def epsilon_dpo(batch: PreferenceBatch, *, beta: float = 0.1, epsilon: float = 0.01) -> LossOutput:
    """-log σ(β_i·h), β_i = β/(1 + ε·sign(h)), h = (logp_w - ref_w) - (logp_l - ref_l): instance-level β.

    Summed log-probs. A pair whose preference grows monotonically as β is lowered to β/(1+ε)
    (h > 0: the policy already favours the chosen more than the reference does) gets the
    weaker KL penalty β/(1+ε); one whose preference grows as β is raised (h < 0) gets
    β/(1-ε); h = 0 keeps β. β_i depends on h only through its sign (no gradient flows
    through it). Rewards β_i·(logp - ref), as the authors log them.
    """
    if not 0 <= epsilon < 1:
        raise ValueError("epsilon-dpo needs 0 <= epsilon < 1")
    chosen_logratio, rejected_logratio = batch.logratios()
    gaps = chosen_logratio - rejected_logratio
    beta_pair = beta / (1 + epsilon * torch.sign(gaps.detach()))
    return LossOutput(-F.logsigmoid(beta_pair * gaps), beta_pair * chosen_logratio, beta_pair * rejected_logratio)
