"""f-DPO: DPO with the reverse KL of its derivation replaced by another f-divergence.

With u = π_θ(y|x)/π_ref(y|x), the implicit reward becomes β·f'(u) instead of β·log u,
and the loss -log σ(β[f'(u_w) - f'(u_l)]) (Wang et al. 2024, Beyond Reverse KL, the f-DPO
objective; checked against TRL 1.16's implementation, not the paper's text, so no equation
number is cited). The reverse KL, f'(u) = log u (+1), is DPO itself (the ``dpo`` loss). The score
functions below are TRL 1.16's (``f_divergence_type``), which differ from f' by constants
that cancel in the difference.

The α-divergence takes TRL's α, which is 1 - α of the f-DPO paper: TRL writes
f'(u) = (u^(α-1) - 1)/(α-1), the paper f'(u) = (1 - u^(-α))/α (its f(u) =
(u^(1-α) - (1-α)u - α)/(α(α-1))); put α_TRL = 1 - α_paper into the first and it is the second.
They agree at α = 0.5 only; here α -> 1 is DPO and α = 0 the forward KL, the paper's other way round.

The scores exponentiate the log-ratio, so they are clamped at ``MAX_EXPONENT`` = 80 nats.
Measured (tests/test_losses_conventions.py): exp overflows past ln(3.4028e38) = 88.7228 in float32
and past 88.72 in bfloat16 (same exponent range); dpo3d's sequence log-probs are float32 (logits
are upcast before the log-softmax). Without the clamp, a rejected pushed more than 88.7 nats below
its reference, which DPO-style training does, makes its reward -inf and its gradient 0·inf = NaN
although the loss is 0. With it, loss, rewards and gradient are finite; below 80 nats they are
exact (the gradient to float32 precision); past 80 the score is flat, where the exact gradient on
the rejected is 0 to any precision (σ(-z) underflows) and the one on a chosen is at least β·e^80.
80 leaves e^8.7 (about 6000x) of headroom below overflow for β·e^80 and the backward pass's sums.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register

#: the exponent of the scores' exp(.) is clamped here, in nats: 8.7 below where exp overflows float32/bf16 (88.72)
MAX_EXPONENT = 80.0

_CLAMP_NOTE = (
    "the exponent is clamped at 80 nats: exp overflows float32 and bfloat16 past 88.7, which would give a "
    "rejected pushed that far below its reference a NaN gradient; past 80 nats from the reference the score is flat"
)


def _f_dpo(batch: PreferenceBatch, beta: float, score) -> LossOutput:
    chosen_logratio, rejected_logratio = batch.logratios()
    chosen_rewards, rejected_rewards = beta * score(chosen_logratio), beta * score(rejected_logratio)
    return LossOutput(-F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards, rejected_rewards)


@register(
    "fdpo-forward-kl",
    log_probs="sum",
    source="Wang et al. 2024, Beyond Reverse KL (f-DPO), forward KL",
    note=f"{_CLAMP_NOTE} (TRL 1.16 does not clamp its forward KL).",
)
def fdpo_forward_kl(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(β[s(u_w) - s(u_l)]), s(u) = 1 - 1/u, u = π_θ/π_ref: f-DPO with the forward KL.

    Summed log-probs (u = exp(logp - ref)). The score saturates at 1 as u grows and falls
    without bound as u -> 0, so pushing the rejected down pays ever more. Past 80 nats below
    the reference the exponent is clamped (TRL 1.16 clamps only its α-divergence; the module
    docstring gives the measurement): loss, rewards and gradient stay finite in float32 and
    bfloat16, and there the score is flat. It is fdpo-alpha at α = 0.
    """
    return _f_dpo(batch, beta, lambda logratio: 1 - torch.exp(torch.clamp(-logratio, max=MAX_EXPONENT)))


@register("fdpo-js", log_probs="sum", source="Wang et al. 2024, Beyond Reverse KL (f-DPO), Jensen-Shannon")
def fdpo_js(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-log σ(β[s(u_w) - s(u_l)]), s(u) = log(2u/(1+u)) = log 2 + log σ(log u): f-DPO with the JS divergence.

    Summed log-probs. The score is bounded above by log 2, so the chosen cannot be rewarded
    without limit.
    """
    return _f_dpo(batch, beta, lambda logratio: math.log(2) + F.logsigmoid(logratio))


@register(
    "fdpo-alpha",
    log_probs="sum",
    source="Wang et al. 2024, Beyond Reverse KL (f-DPO), α-divergence; TRL f_alpha_divergence_coef",
    note=(
        "alpha is TRL's α (f_alpha_divergence_coef), which is 1 - α of the f-DPO paper: the paper writes "
        "f'(u) = (1 - u^(-α))/α, so its α = 0.3 is alpha=0.7 here; the two are the same at α = 0.5 only. "
        f"alpha=1 is DPO, alpha=0 the forward KL; {_CLAMP_NOTE}, as TRL clamps it."
    ),
)
def fdpo_alpha(batch: PreferenceBatch, *, beta: float = 0.1, alpha: float = 0.5) -> LossOutput:
    """-log σ(β[s(u_w) - s(u_l)]), s(u) = (u^(α-1) - 1)/(α-1), TRL's α = 1 - the f-DPO paper's α: f-DPO with the α-divergence.

    Summed log-probs; α = alpha is TRL's f_alpha_divergence_coef (0.5), not the f-DPO paper's α:
    the paper's f'(u) = (1 - u^(-α))/α is this score at alpha = 1 - α (module docstring), so the
    two conventions agree at α = 0.5 only. α -> 1 is DPO (reverse KL), α = 0 the forward KL
    (fdpo-forward-kl). The exponent (α-1)·log u is clamped at 80, as TRL does for float32 and
    bfloat16, so the score stays finite.
    """
    if abs(alpha - 1.0) < 1e-6:
        return _f_dpo(batch, beta, lambda logratio: logratio)

    def score(logratio: torch.Tensor) -> torch.Tensor:
        return (torch.exp(torch.clamp((alpha - 1) * logratio, max=MAX_EXPONENT)) - 1) / (alpha - 1)

    return _f_dpo(batch, beta, score)
