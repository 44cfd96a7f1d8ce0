"""Issue 27's mitigation losses (cal-dpo, simper, beta-dpo, epsilon-dpo, kto) against numbers worked by hand,
with their gradients derived by hand, on test_losses_by_hand.py's two pairs:

    pair A: logp_w = -2, logp_l = -3,   ref_w = -2.5, ref_l = -2.5, |y_w| = 2, |y_l| = 4;  a = 0.5, b = -0.5, h = a - b = 1
    pair B: logp_w = -4, logp_l = -3.5, ref_w = -3,   ref_l = -3.5, |y_w| = 5, |y_l| = 2;  a = -1,  b = 0,    h = -1

beta-dpo's filter needs a third pair to be seen without a tie:

    pair C: logp_w = -1.5, logp_l = -4, ref_w = -2, ref_l = -2;  a = 0.5, b = -2, h = 2.5

Expected values are computed with ``math`` from the arithmetic in the comments. Gradients are of the
sum of the per-pair losses with respect to each pair's summed log-probs; float64 throughout, so the
tolerance rel=1e-12 is round-off of a few operations on O(1)..O(100) numbers (double epsilon 2.2e-16).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dpo3d.losses import LOSSES, PreferenceBatch, compute_loss

from .test_losses_by_hand import check, hand_batch, log_sigmoid, sigmoid, values


def grads(name: str, batch: PreferenceBatch, **hyper) -> tuple[list[float], list[float]]:
    """∂(Σ per-pair losses)/∂logp_w and ∂/∂logp_l, by autograd."""
    chosen = batch.policy_chosen_logps.clone().requires_grad_(True)
    rejected = batch.policy_rejected_logps.clone().requires_grad_(True)
    probe = dataclasses.replace(batch, policy_chosen_logps=chosen, policy_rejected_logps=rejected)
    compute_loss(name, probe, **hyper).losses.sum().backward()
    return chosen.grad.tolist(), rejected.grad.tolist()


def three_pairs() -> PreferenceBatch:
    return PreferenceBatch(
        policy_chosen_logps=values(-2.0, -4.0, -1.5),
        policy_rejected_logps=values(-3.0, -3.5, -4.0),
        reference_chosen_logps=values(-2.5, -3.0, -2.0),
        reference_rejected_logps=values(-2.5, -3.5, -2.0),
    )


def test_the_mitigation_losses_are_registered():
    assert {"cal-dpo", "simper", "beta-dpo", "epsilon-dpo", "kto"} <= set(LOSSES)
    assert not LOSSES["simper"].needs_reference and LOSSES["simper"].log_probs == "mean"
    for name in ("cal-dpo", "beta-dpo", "epsilon-dpo", "kto"):
        assert LOSSES[name].needs_reference and LOSSES[name].log_probs == "sum"


# --------------------------------------------------------------------------- Cal-DPO


def test_cal_dpo_by_hand():
    # loss = -log σ(a - b) + (a - 1/(2β))² + (b + 1/(2β))²;  β = 0.1: 1/(2β) = 5
    # A: -log σ(1) + (0.5 - 5)² + (-0.5 + 5)² = 0.3132617 + 20.25 + 20.25 = 40.8132617
    # B: -log σ(-1) + (-1 - 5)² + (0 + 5)²    = 1.3132617 + 36 + 25      = 62.3132617
    losses = [-log_sigmoid(1) + 20.25 + 20.25, -log_sigmoid(-1) + 36 + 25]
    assert losses == pytest.approx([40.8132617, 62.3132617], abs=1e-7)
    check("cal-dpo", hand_batch(), losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)
    # β = 0.5: targets ±1.  A: 0.3132617 + 0.25 + 0.25;  B: 1.3132617 + 4 + 1
    check("cal-dpo", hand_batch(), [-log_sigmoid(1) + 0.5, -log_sigmoid(-1) + 5], [0.25, -0.5], [-0.25, 0.0], beta=0.5)


def test_cal_dpo_gradient_by_hand():
    # ∂L/∂logp_w = -σ(-(a - b)) + 2(a - 1/(2β));  ∂L/∂logp_l = σ(-(a - b)) + 2(b + 1/(2β))
    # A: -σ(-1) + 2(-4.5) = -9.2689414;  σ(-1) + 2(4.5) = 9.2689414
    # B: -σ(1) + 2(-6) = -12.7310586;    σ(1) + 2(5) = 10.7310586
    chosen, rejected = grads("cal-dpo", hand_batch(), beta=0.1)
    assert chosen == pytest.approx([-sigmoid(-1) - 9, -sigmoid(1) - 12], rel=1e-12)
    assert rejected == pytest.approx([sigmoid(-1) + 9, sigmoid(1) + 10], rel=1e-12)


def test_cal_dpo_is_sppo_hard_plus_unscaled_dpo():
    # the calibration term is sppo-hard's loss; the contrastive term is DPO at β = 1
    batch = hand_batch()
    calibrated = compute_loss("cal-dpo", batch, beta=0.2).losses
    parts = compute_loss("sppo-hard", batch, beta=0.2).losses + compute_loss("dpo", batch, beta=1.0).losses
    torch.testing.assert_close(calibrated, parts, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- SimPER


def test_simper_by_hand():
    # loss = -exp(logp_w/|y_w|) + exp(logp_l/|y_l|); rewards the per-token log-probs
    # A: -e^(-2/2) + e^(-3/4) = -0.3678794 + 0.4723666 = 0.1044872
    # B: -e^(-4/5) + e^(-3.5/2) = -0.4493290 + 0.1737739 = -0.2755551
    losses = [-math.exp(-1) + math.exp(-0.75), -math.exp(-0.8) + math.exp(-1.75)]
    assert losses == pytest.approx([0.1044872, -0.2755551], abs=1e-7)
    check("simper", hand_batch(), losses, [-1.0, -0.8], [-0.75, -1.75])
    # no reference is read
    free = dataclasses.replace(hand_batch(), reference_chosen_logps=None, reference_rejected_logps=None)
    check("simper", free, losses, [-1.0, -0.8], [-0.75, -1.75])


def test_simper_gradient_by_hand():
    # ∂L/∂logp_w = -e^(logp_w/|y_w|)/|y_w|;  ∂L/∂logp_l = e^(logp_l/|y_l|)/|y_l|
    # A: -e^-1/2 = -0.1839397, e^-0.75/4 = 0.1180917;  B: -e^-0.8/5 = -0.0898658, e^-1.75/2 = 0.0868869
    chosen, rejected = grads("simper", hand_batch())
    assert chosen == pytest.approx([-math.exp(-1) / 2, -math.exp(-0.8) / 5], rel=1e-12)
    assert rejected == pytest.approx([math.exp(-0.75) / 4, math.exp(-1.75) / 2], rel=1e-12)


# --------------------------------------------------------------------------- β-DPO


def test_beta_dpo_by_hand():
    # three pairs, gaps M = h = [1, -1, 2.5], batch mean 2.5/3 = 0.8333333
    # distances |M - mean| = [0.1666667, 1.8333333, 1.6666667]; ρ = 0.2: k = ⌊3·0.8⌋ = 2 -> keep A and C
    # kept mean (1 + 2.5)/2 = 1.75;  β_b = 0.1·(1 + 0.6·(1.75 - 0.8333333)) = 0.1·1.55 = 0.155
    # losses (n/k = 1.5): A 1.5·(-log σ(0.155)) = 0.9279710, B 0, C 1.5·(-log σ(0.3875)) = 0.7770757
    # rewards with the base β: chosen 0.1·a = [0.05, -0.1, 0.05], rejected 0.1·b = [-0.05, 0, -0.2]
    out = compute_loss("beta-dpo", three_pairs(), beta=0.1, alpha=0.6, rho=0.2)
    expected = [1.5 * -log_sigmoid(0.155), 0.0, 1.5 * -log_sigmoid(0.155 * 2.5)]
    assert expected == pytest.approx([0.9279710, 0.0, 0.7770757], abs=1e-7)
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert out.chosen_rewards.tolist() == pytest.approx([0.05, -0.1, 0.05], rel=1e-12)
    assert out.rejected_rewards.tolist() == pytest.approx([-0.05, 0.0, -0.2], rel=1e-12)
    # the batch loss is the mean over the kept pairs
    assert out.loss.item() == pytest.approx((-log_sigmoid(0.155) - log_sigmoid(0.3875)) / 2, rel=1e-12)

    # two pairs (hand_batch): M = [1, -1], mean 0, both 1 away: k = ⌊1.6⌋ = 1, the tie keeps the first (A)
    # β_b = 0.1·(1 + 0.6·(1 - 0)) = 0.16;  losses 2·(-log σ(0.16)) and 0
    check("beta-dpo", hand_batch(), [2 * -log_sigmoid(0.16), 0.0], [0.05, -0.1], [-0.05, 0.0])
    # ρ = 0 keeps every pair: kept mean = batch mean, β_b = β, and the loss is DPO's
    check("beta-dpo", hand_batch(), [-log_sigmoid(0.1), -log_sigmoid(-0.1)], [0.05, -0.1], [-0.05, 0.0], rho=0.0)


def test_beta_dpo_clamps_its_beta_at_one_thousandth():
    # α = -2 on three_pairs: 1 - 2·0.9166667 = -0.8333333 < 0, so β_b = 1e-3
    out = compute_loss("beta-dpo", three_pairs(), beta=0.1, alpha=-2.0, rho=0.2)
    assert out.losses.tolist() == pytest.approx([1.5 * -log_sigmoid(1e-3), 0.0, 1.5 * -log_sigmoid(2.5e-3)], rel=1e-12)


def test_beta_dpo_gradient_by_hand():
    # β_b and the filter are held constant: ∂(Σ losses)/∂logp_w,i = -(n/k)·m_i·β_b·σ(-β_b·M_i), the rejected's the opposite
    # A: -1.5·0.155·σ(-0.155);  B: 0 (dropped);  C: -1.5·0.155·σ(-0.3875)
    chosen, rejected = grads("beta-dpo", three_pairs())
    expected = [-1.5 * 0.155 * sigmoid(-0.155), 0.0, -1.5 * 0.155 * sigmoid(-0.3875)]
    assert chosen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert rejected == pytest.approx([-g for g in expected], rel=1e-12, abs=1e-15)


def test_beta_dpo_passes_gradcheck_with_a_fixed_beta():
    # α = 0: β_b = β whatever the gaps, and the filter is constant between its switching points,
    # so finite differences see the same function autograd differentiates
    batch = three_pairs()

    def fn(chosen, rejected):
        probe = dataclasses.replace(batch, policy_chosen_logps=chosen, policy_rejected_logps=rejected)
        return compute_loss("beta-dpo", probe, alpha=0.0).losses

    inputs = (batch.policy_chosen_logps.clone().requires_grad_(True), batch.policy_rejected_logps.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(fn, inputs)


def test_beta_dpo_refuses_a_filter_that_keeps_nothing():
    with pytest.raises(ValueError, match="rho"):
        compute_loss("beta-dpo", hand_batch(), rho=1.0)


# --------------------------------------------------------------------------- ε-DPO


def test_epsilon_dpo_by_hand():
    # β_i = β/(1 + ε·sign(h)):  A h = 1 -> β/(1+ε);  B h = -1 -> β/(1-ε)
    # ε = 0.01: β_A = 0.1/1.01 = 0.0990099, β_B = 0.1/0.99 = 0.1010101
    ba, bb = 0.1 / 1.01, 0.1 / 0.99
    check("epsilon-dpo", hand_batch(), [-log_sigmoid(ba), -log_sigmoid(-bb)], [0.5 * ba, -bb], [-0.5 * ba, 0.0])
    # ε = 0.5: β_A = 0.1/1.5 = 0.0666667, β_B = 0.1/0.5 = 0.2
    ba, bb = 0.1 / 1.5, 0.2
    check(
        "epsilon-dpo", hand_batch(), [-log_sigmoid(ba), -log_sigmoid(-bb)], [0.5 * ba, -bb], [-0.5 * ba, 0.0],
        beta=0.1, epsilon=0.5,
    )  # fmt: skip
    # h = 0 keeps β: a pair with a = b = 0.5 (policy chosen -2 -> ref -2.5, rejected -2 -> ref -2.5)
    level = PreferenceBatch(values(-2.0), values(-2.0), values(-2.5), values(-2.5))
    assert compute_loss("epsilon-dpo", level, epsilon=0.5).chosen_rewards.item() == pytest.approx(0.05, rel=1e-12)


def test_epsilon_dpo_gradient_by_hand():
    # ∂L/∂logp_w = -β_i·σ(-β_i·h), ∂L/∂logp_l the opposite;  ε = 0.5: A -(1/15)·σ(-1/15), B -0.2·σ(0.2)
    chosen, rejected = grads("epsilon-dpo", hand_batch(), epsilon=0.5)
    expected = [-(0.1 / 1.5) * sigmoid(-0.1 / 1.5), -0.2 * sigmoid(0.2)]
    assert chosen == pytest.approx(expected, rel=1e-12)
    assert rejected == pytest.approx([-g for g in expected], rel=1e-12)


def test_epsilon_dpo_with_epsilon_zero_is_dpo():
    batch = hand_batch()
    torch.testing.assert_close(
        compute_loss("epsilon-dpo", batch, epsilon=0.0).losses, compute_loss("dpo", batch).losses, rtol=1e-12, atol=0
    )
    with pytest.raises(ValueError, match="epsilon"):
        compute_loss("epsilon-dpo", batch, epsilon=1.0)


# --------------------------------------------------------------------------- KTO


def test_kto_by_hand():
    # z0 = max(0, mean(a, b)) = max(0, (0.5 - 1 - 0.5 + 0)/4 = -0.25) = 0
    # A: (1 - σ(0.1·0.5)) + (1 - σ(0.1·0.5)) = 2(1 - σ(0.05)) = 0.9750052
    # B: (1 - σ(0.1·(-1))) + (1 - σ(0)) = 0.5249792 + 0.5 = 1.0249792
    losses = [2 * (1 - sigmoid(0.05)), 1 - sigmoid(-0.1) + 0.5]
    assert losses == pytest.approx([0.9750052, 1.0249792], abs=1e-7)
    check("kto", hand_batch(), losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)
    # λ_D = 2, λ_U = 0.5:  A 2(1 - σ(0.05)) + 0.5(1 - σ(0.05));  B 2(1 - σ(-0.1)) + 0.5·0.5
    weighted = [2.5 * (1 - sigmoid(0.05)), 2 * (1 - sigmoid(-0.1)) + 0.25]
    check("kto", hand_batch(), weighted, [0.05, -0.1], [-0.05, 0.0], desirable_weight=2.0, undesirable_weight=0.5)


def shifted_kto_batch() -> PreferenceBatch:
    # pair B's chosen raised to -2: a = [0.5, 1], b = [-0.5, 0], mean (0.5 + 1 - 0.5 + 0)/4 = 0.25 = z0
    return dataclasses.replace(hand_batch(), policy_chosen_logps=values(-2.0, -2.0))


def test_kto_reference_point_is_the_batch_mean_log_ratio_when_positive():
    # z0 = 0.25.  A: (1 - σ(0.1·(0.5 - 0.25))) + (1 - σ(0.1·(0.25 + 0.5))) = (1 - σ(0.025)) + (1 - σ(0.075))
    #             B: (1 - σ(0.1·(1 - 0.25))) + (1 - σ(0.1·(0.25 - 0))) = (1 - σ(0.075)) + (1 - σ(0.025))
    both = 2 - sigmoid(0.025) - sigmoid(0.075)
    assert both == pytest.approx(0.9750091, abs=1e-7)
    check("kto", shifted_kto_batch(), [both, both], [0.05, 0.1], [-0.05, 0.0])


def test_kto_gradient_by_hand():
    # z0 held constant: ∂L/∂logp_w = -λ_D·β·σ(x)(1 - σ(x)), x = β(a - z0);  ∂L/∂logp_l = λ_U·β·σ(y)(1 - σ(y)), y = β(z0 - b)
    # shifted batch (z0 = 0.25): A x = 0.025, y = 0.075;  B x = 0.075, y = 0.025
    d = lambda x: sigmoid(x) * (1 - sigmoid(x))  # noqa: E731
    chosen, rejected = grads("kto", shifted_kto_batch(), desirable_weight=2.0, undesirable_weight=0.5)
    assert chosen == pytest.approx([-2 * 0.1 * d(0.025), -2 * 0.1 * d(0.075)], rel=1e-12)
    assert rejected == pytest.approx([0.5 * 0.1 * d(0.075), 0.5 * 0.1 * d(0.025)], rel=1e-12)


def test_kto_passes_gradcheck_where_the_reference_point_is_clamped():
    # hand_batch's mean log-ratio is -0.25 < 0: z0 = 0 in a neighbourhood, so finite differences agree with autograd
    batch = hand_batch()

    def fn(chosen, rejected):
        return compute_loss("kto", dataclasses.replace(batch, policy_chosen_logps=chosen, policy_rejected_logps=rejected)).losses

    inputs = (batch.policy_chosen_logps.clone().requires_grad_(True), batch.policy_rejected_logps.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(fn, inputs)
