"""f-DPO: DPO with the reverse KL of its derivation replaced by another f-divergence.

With u = π_θ(y|x)/π_ref(y|x), the implicit reward becomes β·f'(u) instead of β·log u,
and the loss -log σ(β[f'(u_w) - f'(u_l)]) (Wang et al. 2024, Beyond Reverse KL, the f-DPO
objective; checked against TRL 1.16's implementation, not the paper's text, so no equation
number is cited). The reverse KL, f'(u) = log u (+1), is DPO itself (the ``dpo`` loss). The score
functions below are TRL 1.16's (``f_divergence_type``), which differ from f' by constants
that cancel in the difference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register

#: the α-divergence score exp((α-1)·log u) is clamped in log space, as TRL does, so float32 cannot overflow
_MAX_EXPONENT = 80.0


def _f_dpo(batch: PreferenceBatch, beta: float, score) -> LossOutput:
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_rewards, rejected_rewards = beta * score(chosen_logratio), beta * score(rejected_logratio)
    return LossOutput(-F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards)


@register("fdpo-forward-kl", log_probs="sum", source="Wang et al. 2024, Beyond Reverse KL (f-DPO), forward KL")
def fdpo_forward_kl(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(β[s(u_w) - s(u_l)]), s(u) = 1 - 1/u, u = π_θ/π_ref: f-DPO with the forward KL.

    Summed log-probs (u = exp(logp - ref)). The score saturates at 1 as u grows and falls
    without bound as u -> 0, so pushing the rejected down pays ever more. Past 80 nats below
    the reference the exponent is clamped (TRL clamps only its α-divergence) so float32 stays
    finite; there the score is flat.
    """
    return _f_dpo(batch, beta, lambda logratio: 1 - torch.exp(torch.clamp(-logratio, max=_MAX_EXPONENT)))


@register("fdpo-js", log_probs="sum", source="Wang et al. 2024, Beyond Reverse KL (f-DPO), Jensen-Shannon")
def fdpo_js(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(β[s(u_w) - s(u_l)]), s(u) = log(2u/(1+u)) = log 2 + log σ(log u): f-DPO with the JS divergence.

    Summed log-probs. The score is bounded above by log 2, so the chosen cannot be rewarded
    without limit.
    """
    return _f_dpo(batch, beta, lambda logratio: math.log(2) + F.logsigmoid(logratio))


@register("fdpo-alpha", log_probs="sum", source="Wang et al. 2024, Beyond Reverse KL (f-DPO), α-divergence")
def fdpo_alpha(batch: PreferenceBatch, *, beta: float = 0.1, alpha: float = 0.5) -> LossOutput:
    """-log σ(β[s(u_w) - s(u_l)]), s(u) = (u^(α-1) - 1)/(α-1): f-DPO with the α-divergence (α -> 1: DPO).

    Summed log-probs; α = alpha (TRL's f_alpha_divergence_coef, 0.5). The exponent
    (α-1)·log u is clamped at 80, as TRL does, so the score stays finite.
    """
    if abs(alpha - 1.0) < 1e-6:
        return _f_dpo(batch, beta, lambda logratio: logratio)

    def score(logratio: torch.Tensor) -> torch.Tensor:
        return (torch.exp(torch.clamp((alpha - 1) * logratio, max=_MAX_EXPONENT)) - 1) / (alpha - 1)

    return _f_dpo(batch, beta, score)
