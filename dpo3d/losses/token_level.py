"""Losses that need more than the sequence sums: a split at the pair's shared length (LD-DPO),
or per-token weights from the policy's whole distribution (WPO).

They declare those extras in ``inputs``; ``train-dpo`` fills them from the per-token
log-probs (``dpo3d.scoring.logprobs.pair_token_extras``) and the toy model from its softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register


@register(
    "ld-dpo",
    log_probs="sum",
    inputs=("shared",),
    source="Liu et al. 2024, Length Desensitization in DPO (LD-DPO, arXiv 2409.06411); TRL ld_alpha",
)
def ld_dpo(batch: PreferenceBatch, *, beta: float = 0.1, ld_alpha: float = 0.5) -> LossOutput:
    """-log σ(β[(l̃p_w - l̃r_w) - (l̃p_l - l̃r_l)]), l̃p = logp_{≤ℓ} + α·logp_{>ℓ}, ℓ = min(|y_w|, |y_l|).

    Summed log-probs, split at the pair's shared length ℓ: the first ℓ tokens count in
    full, the verbose tail beyond them is damped by α = ld_alpha ∈ [0, 1] (α = 1: DPO).
    Policy and reference are split alike, as TRL 1.16 does. Rewards are β times the
    split log-ratios.
    """
    if not 0 <= ld_alpha <= 1:
        raise ValueError("ld-dpo needs 0 <= ld_alpha <= 1")
    batch.logratios()  # a missing reference is named first
    policy_chosen_shared, policy_rejected_shared, reference_chosen_shared, reference_rejected_shared = batch.shared_logps()

    def desensitised(total: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        return shared + ld_alpha * (total - shared)

    chosen_logratio = desensitised(batch.policy_chosen_logps, policy_chosen_shared) - desensitised(
        batch.reference_chosen_logps, reference_chosen_shared
    )
    rejected_logratio = desensitised(batch.policy_rejected_logps, policy_rejected_shared) - desensitised(
        batch.reference_rejected_logps, reference_rejected_shared
    )
    chosen_rewards, rejected_rewards = beta * chosen_logratio, beta * rejected_logratio
    return LossOutput(-F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards)


@register(
    "wpo",
    log_probs="sum",
    inputs=("wpo",),
    source="Zhou et al. 2024, WPO: Weighted Preference Optimization (arXiv 2406.11827), Eq. 2; TRL use_weighting",
    note=(
        "the pair weight w_w·w_l is clamped at max_weight=1.0, as the WPO authors' code (scripts/run_wpo.py) and "
        "TRL up to 0.28 do: a pair weighs at most what it weighs in DPO. TRL 1.16 does not clamp (its DPO "
        "refactor dropped it); max_weight=inf gives TRL 1.16's loss."
    ),
)
def wpo(batch: PreferenceBatch, *, beta: float = 0.1, max_weight: float = 1.0) -> LossOutput:
    """-min(w_w·w_l, C)·log σ(h), w = exp(mean_t[log π(y_t) - log Σ_v π(v)²]) held constant: DPO weighted on-policy.

    Summed log-probs in h; the weight of each response is the length-averaged log-prob of
    its tokens, each aligned by the policy's Σ_v π(v)² at that position (what TRL 1.16
    computes), without gradient. Pairs the current policy would rather sample weigh more.
    A token more likely than Σ_v π(v)² (the chance that two samples agree) has a log-weight
    above 0, so w_w·w_l can exceed 1: with C = max_weight (1, as in the WPO authors' code and
    TRL up to 0.28) no pair weighs more than in DPO; max_weight = inf is TRL 1.16, which
    dropped the clamp.
    """
    if not max_weight > 0:
        raise ValueError("wpo needs max_weight > 0")
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_weight, rejected_weight = batch.wpo_logweights()
    weight = torch.clamp(torch.exp(chosen_weight + rejected_weight).detach(), max=max_weight)
    chosen_rewards, rejected_rewards = beta * chosen_logratio, beta * rejected_logratio
    return LossOutput(-weight * F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards)
