"""KTO on the registry's paired batches: the chosen is a desirable example, the rejected an undesirable one.

KTO (Ethayarajh et al. 2024) needs no pairs: each example has a label. On a pair it scores the
two responses apart, each against the reference point z0 (an estimate of KL(π_θ ‖ π_ref)).
"""

from __future__ import annotations

import torch

from .registry import LossOutput, PreferenceBatch, register


@register(
    "kto",
    log_probs="sum",
    source=(
        "Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization, the KTO loss "
        "(Eq. 7 in TRL's citation); TRL 1.16 KTOTrainer loss_type kto"
    ),
    note=(
        "z0 is estimated from the batch's own responses: the mean of the chosen and rejected log-ratios, detached "
        "and clamped at 0. TRL (and the paper) estimate it from mismatched responses (prompt i with the "
        "completion of another example), which a paired batch does not carry. The two terms of a pair are summed, "
        "so the batch loss is twice TRL's mean over its 2n examples for the same z0. Unpaired "
        "{prompt, completion, label} files are read as such pairs (dpo3d/pairs/unpaired.py)."
    ),
)
def kto(
    batch: PreferenceBatch, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> LossOutput:
    """λ_D·(1 - σ(β(a - z0))) + λ_U·(1 - σ(β(z0 - b))), z0 = max(0, sg(mean of the batch's a and b)).

    Summed log-probs; a = logp_w - ref_w (the desirable), b = logp_l - ref_l (the undesirable);
    λ_D = desirable_weight, λ_U = undesirable_weight (TRL's names). The reference point z0 is
    held constant: each response is pushed away from it on its own, and the loss saturates
    (σ -> 1) once a response is β-far past it, so neither side is driven without bound.
    Rewards β·a, β·b.
    """
    chosen_logratio, rejected_logratio = batch.logratios()
    z0 = torch.cat([chosen_logratio, rejected_logratio]).mean().detach().clamp(min=0)
    losses = desirable_weight * (1 - torch.sigmoid(beta * (chosen_logratio - z0))) + undesirable_weight * (
        1 - torch.sigmoid(beta * (z0 - rejected_logratio))
    )
    return LossOutput(losses, beta * chosen_logratio, beta * rejected_logratio)
