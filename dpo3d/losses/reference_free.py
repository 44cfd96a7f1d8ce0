"""Reference-free losses: those that keep an SFT (NLL) term on the chosen (ORPO, CPO, plain SFT), and SimPER."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import LossOutput, PreferenceBatch, register


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, accurate at both ends (Mächler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@register("orpo", log_probs="mean", needs_reference=False, source="Hong et al. 2024, ORPO: Monolithic Preference Optimization, Eqs. 4-7")
def orpo(batch: PreferenceBatch, *, beta: float = 0.1) -> LossOutput:
    """-logp_w/|y_w| - λ·log σ(log odds(y_w) - log odds(y_l)), odds(y) = p/(1-p), p = exp(logp/|y|).

    Length-averaged log-probs throughout (as in ORPO and TRL's ORPOTrainer); λ = beta (TRL's
    name, 0.1). No reference. Rewards are β times the per-token log-probs.
    """
    chosen_lengths, rejected_lengths = batch.lengths()
    chosen_mean = batch.policy_chosen_logps / chosen_lengths
    rejected_mean = batch.policy_rejected_logps / rejected_lengths
    log_odds = (chosen_mean - rejected_mean) - (_log1mexp(chosen_mean) - _log1mexp(rejected_mean))
    losses = -chosen_mean - beta * F.logsigmoid(log_odds)
    return LossOutput(losses, beta * chosen_mean, beta * rejected_mean)


@register("cpo", log_probs="sum", needs_reference=False, source="Xu et al. 2024, Contrastive Preference Optimization (CPO), Eq. 3 + NLL")
def cpo(batch: PreferenceBatch, *, beta: float = 0.1, sft_weight: float = 1.0) -> LossOutput:
    """-log σ(β(logp_w - logp_l)) - α·logp_w/|y_w|: DPO with a uniform reference, plus the NLL on the chosen.

    Summed log-probs in the preference term (as TRL's CPOTrainer with loss_type sigmoid);
    the NLL is length-averaged, α = sft_weight (TRL's cpo_alpha, 1.0). Rewards β·logp.
    """
    chosen_lengths, _ = batch.lengths()
    chosen_rewards, rejected_rewards = beta * batch.policy_chosen_logps, beta * batch.policy_rejected_logps
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards) - sft_weight * batch.policy_chosen_logps / chosen_lengths
    return LossOutput(losses, chosen_rewards, rejected_rewards)


@register("sft", log_probs="mean", needs_reference=False, source="Ouyang et al. 2022 (SFT); TRL loss_type sft, as in MPO (Wang et al. 2024)")
def sft(batch: PreferenceBatch) -> LossOutput:
    """-logp_w/|y_w|: the per-token negative log-likelihood of the chosen response only.

    Length-averaged log-probs, per pair (TRL averages over all chosen tokens of the batch
    instead: the same when the chosen responses are equally long). The rejected response
    gets no gradient; rewards are the per-token log-probs. Mostly a part of mixtures.
    """
    chosen_lengths, rejected_lengths = batch.lengths()
    chosen_mean = batch.policy_chosen_logps / chosen_lengths
    return LossOutput(-chosen_mean, chosen_mean, batch.policy_rejected_logps / rejected_lengths)


@register(
    "simper",
    log_probs="mean",
    needs_reference=False,
    source=(
        "Xiao et al. 2025, SimPER: A Minimalist Approach to Preference Alignment without Hyperparameters "
        "(ICLR 2025), loss as in the authors' code (tengxiao1/SimPER, loss_type SimPER)"
    ),
)
def simper(batch: PreferenceBatch) -> LossOutput:
    """-exp(logp_w/|y_w|) + exp(logp_l/|y_l|): raise the chosen's inverse perplexity, lower the rejected's.

    Length-averaged log-probs: exp(logp/|y|) is the inverse perplexity of a response, in
    (0, 1]. No reference, no hyper-parameter, no SFT term. The gradient on a response's
    summed log-prob is exp(logp/|y|)/|y|: it fades as the rejected's perplexity grows, so
    the rejected cannot be pushed without bound. Rewards are the per-token log-probs.
    """
    chosen_lengths, rejected_lengths = batch.lengths()
    chosen_mean = batch.policy_chosen_logps / chosen_lengths
    rejected_mean = batch.policy_rejected_logps / rejected_lengths
    return LossOutput(-torch.exp(chosen_mean) + torch.exp(rejected_mean), chosen_mean, rejected_mean)
