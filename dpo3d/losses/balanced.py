"""The balanced-gradient family: losses built so DPO's rejected gradient cannot run away from the chosen one.

In probability space DPO's two gradients stand in the ratio (∂L/∂x2)/(∂L/∂x1) = -x1/x2
(PAPER.md, Corollary 1): once x2 << x1 the rejected side is pushed ever harder and the
chosen one barely at all. Balanced-DPO (Ma et al. 2025, arXiv 2502.20847) reweights the
gradients to remove this, but its formula is not public (see registry.UNAVAILABLE); the
three published constructions below rebalance the same two gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register


@register(
    "adadpo",
    log_probs="sum",
    source="Chen et al. 2026, AdaDPO: Self-Adaptive DPO with Balanced Gradient Updates (arXiv 2605.28440)",
    note=(
        "AdaDPO's per-token form and its clipping bound are not in any text we could read: the paper's abstract "
        "(arXiv 2605.28440) says only that its practical implementation balances per-token gradients and applies "
        "a numerical clipping bound for stability. The sequence-level balance β_w/β = sg(x1/x2) follows from "
        "Corollary 1 of the 3D-properties paper; per_token (the coefficient from length-averaged log-probs) and clip (an upper cap, "
        "β_w <= clip·β, no lower bound) are dpo3d's own, not the paper's formulas."
    ),
)
def adadpo(
    batch: PreferenceBatch,
    *,
    beta: float = 0.1,
    clip: float = 2.0,
    use_reference: bool = False,
    per_token: bool = False,
) -> LossOutput:
    """-log σ(β_w(logp_w - ref_w) - β(logp_l - ref_l)), β_w = β·min(sg(x1/x2), C): equal |∂L/∂x1| and |∂L/∂x2|.

    Summed log-probs in the DPO term. The per-pair coefficient is held constant (stop-gradient,
    sg): with z the logit, ∂L/∂x1 = -β_w σ(-z)/x1 and ∂L/∂x2 = β σ(-z)/x2, so β_w/β = x1/x2
    makes the two magnitudes equal (PAPER.md, from Corollary 1). use_reference: balance the
    ratios to the reference, (x1/ref_w)/(x2/ref_l), instead of the probabilities (the abstract
    names the reference as an optional component).

    What is dpo3d's own, not the paper's: the paper's per-token form and its clipping bound are
    not in any text we could read (only its abstract, arXiv 2605.28440 and OpenReview, which
    says the practical implementation "balances per-token gradients and applies a numerical
    clipping bound for stability", with no formula). Here C = clip (2 by default, a value of
    dpo3d's) caps β_w from above, so the balance holds while x1/x2 <= C; there is no lower
    bound, so when x1 << x2 β_w -> 0 and the chosen's log-space gradient β_w σ(-z) vanishes.
    Whether the paper's bound is upper or lower, which coefficient it bounds, and its value are
    unknown. per_token builds the coefficient from length-averaged log-probs (the geometric
    mean of the token probabilities), dpo3d's reading of "per-token", not a formula of the paper.
    """
    if clip <= 0:
        raise ValueError("adadpo needs clip > 0")
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_score, rejected_score = batch.policy_chosen_logps, batch.policy_rejected_logps
    if use_reference:
        chosen_score, rejected_score = chosen_logratio, rejected_logratio
    if per_token:
        chosen_lengths, rejected_lengths = batch.lengths()
        chosen_score, rejected_score = chosen_score / chosen_lengths, rejected_score / rejected_lengths
    log_scale = torch.clamp((chosen_score - rejected_score).detach(), max=math.log(clip))
    beta_chosen = beta * log_scale.exp()
    chosen_rewards, rejected_rewards = beta_chosen * chosen_logratio, beta * rejected_logratio
    return LossOutput(-F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards)


@register(
    "bpo",
    log_probs="sum",
    source="Sun et al. 2025, BPO: Revisiting Preference Modeling in DPO (arXiv 2506.03557), balanced reward margin",
)
def bpo(batch: PreferenceBatch, *, beta: float = 0.1, alpha: float = 0.3) -> LossOutput:
    """-log σ(min(r_w, -α·r_l)), r = β(logp - ref): the chosen reward itself must rise.

    Summed log-probs. The balanced reward margin min(r_w, -α r_l) with the gap adaptor
    α ∈ (0, 1] (BPO §3; the authors' code, loss_type balance_logistic_alpha, uses α = 0.3).
    Only the smaller side gets a gradient: while r_w < -α r_l the loss pushes the chosen
    alone, so the rejected cannot be driven down at the chosen's expense.
    """
    if not 0 < alpha <= 1:
        raise ValueError("bpo needs 0 < alpha <= 1")
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_rewards, rejected_rewards = beta * chosen_logratio, beta * rejected_logratio
    margin = torch.minimum(chosen_rewards, -alpha * rejected_rewards)
    return LossOutput(-F.logsigmoid(margin), chosen_rewards, rejected_rewards)


@register(
    "bdpo",
    log_probs="sum",
    source="Cho et al. 2025, Rethinking DPO: The Role of Rejected Responses (Bounded-DPO, arXiv 2506.12725)",
)
def bdpo(batch: PreferenceBatch, *, beta: float = 0.1, mix: float = 0.5) -> LossOutput:
    """-log σ(β(logp_w - ref_w) - β(log π_mix(y_l) - ref_l)), π_mix = λ·π_θ + (1-λ)·π_ref on the rejected.

    Summed log-probs; λ = mix (0.5 by default, as in the paper). log π_mix is computed
    with logaddexp, so it is exact for sequence log-probs far below float range. The rejected
    reward β(log π_mix - ref_l) >= β·log(1-λ) is bounded below, and its gradient
    β σ(-z)·λx2/(λx2 + (1-λ)ref) vanishes as x2 -> 0: the rejected term cannot dominate.
    BDPO §4 (the bounded objective); checked against the paper's abstract and the issue's
    statement of it, not its full text, so no equation number is cited.
    """
    if not 0 < mix <= 1:
        raise ValueError("bdpo needs 0 < mix <= 1")
    chosen_logratio, _ = batch.logratios()
    reference_rejected = batch.reference_rejected_logps
    if mix == 1:
        mixed = batch.policy_rejected_logps
    else:
        mixed = torch.logaddexp(batch.policy_rejected_logps + math.log(mix), reference_rejected + math.log(1 - mix))
    chosen_rewards, rejected_rewards = beta * chosen_logratio, beta * (mixed - reference_rejected)
    return LossOutput(-F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards)
