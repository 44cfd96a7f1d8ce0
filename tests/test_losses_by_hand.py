"""Every registered loss against numbers worked out by hand (issue 2, item 2).

All tests use the same two pairs; the expected values are computed here with
``math`` from the arithmetic written out in the comments, never with torch or
with the function under test. The formulas were checked against the cited
papers and against TRL's ``DPOTrainer``/``CPOTrainer`` definitions.

    pair A: logp_w = -2,   logp_l = -3,   ref_w = -2.5, ref_l = -2.5, |y_w| = 2, |y_l| = 4
            a = logp_w - ref_w = -2 - (-2.5) =  0.5
            b = logp_l - ref_l = -3 - (-2.5) = -0.5
    pair B: logp_w = -4,   logp_l = -3.5, ref_w = -3,   ref_l = -3.5, |y_w| = 5, |y_l| = 2
            a = -4 - (-3)   = -1     (chosen fell below the reference: DPOP's penalty fires)
            b = -3.5 - (-3.5) = 0
"""

from __future__ import annotations

import math

import pytest
import torch

from dpo3d.losses import LOSSES, PreferenceBatch, compute_loss


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def log_sigmoid(z: float) -> float:
    # log σ(z) = -log(1 + e^{-z})
    return -math.log1p(math.exp(-z))


def values(*numbers: float) -> torch.Tensor:
    return torch.tensor(numbers, dtype=torch.float64)


def hand_batch() -> PreferenceBatch:
    """Two pairs whose losses are worked by hand below (and in test_losses_by_hand_more)."""
    return PreferenceBatch(
        policy_chosen_logps=values(-2.0, -4.0),
        policy_rejected_logps=values(-3.0, -3.5),
        reference_chosen_logps=values(-2.5, -3.0),
        reference_rejected_logps=values(-2.5, -3.5),
        chosen_lengths=values(2, 5),
        rejected_lengths=values(4, 2),
    )


@pytest.fixture
def batch() -> PreferenceBatch:
    return hand_batch()


def check(name: str, batch: PreferenceBatch, losses, chosen_rewards, rejected_rewards, **hyper) -> None:
    out = compute_loss(name, batch, **hyper)
    assert out.losses.shape == (2,)
    assert out.losses.tolist() == pytest.approx(losses, rel=1e-12, abs=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx(chosen_rewards, rel=1e-12, abs=1e-12)
    assert out.rejected_rewards.tolist() == pytest.approx(rejected_rewards, rel=1e-12, abs=1e-12)
    # the batch loss is the mean of the per-pair losses
    assert out.loss.item() == pytest.approx(sum(losses) / 2, rel=1e-12)


def test_every_registered_loss_has_a_hand_computed_test():
    from . import test_losses_by_hand_more as more  # issue 14's losses, kept in their own file
    from . import test_losses_mitigation as mitigation  # issue 27's losses

    known = set(globals()) | set(vars(more)) | set(vars(mitigation))
    missing = [name for name in LOSSES if f"test_{name.replace('-', '_')}_by_hand" not in known]
    assert not missing, f"losses without a hand-computed test: {missing}"


def test_dpo_by_hand(batch):
    # β = 0.1;  h = β(a - b);  loss = -log σ(h);  rewards r_w = β·a, r_l = β·b
    # A: h = 0.1·(0.5 - (-0.5)) = 0.1;  -log σ(0.1) = log(1 + e^-0.1) ≈ 0.644397
    #    r_w = 0.1·0.5 = 0.05, r_l = 0.1·(-0.5) = -0.05
    # B: h = 0.1·(-1 - 0) = -0.1;  -log σ(-0.1) = log(1 + e^0.1) ≈ 0.744397
    #    r_w = -0.1, r_l = 0
    losses = [-log_sigmoid(0.1), -log_sigmoid(-0.1)]
    assert losses == pytest.approx([0.6443966600735709, 0.744396660073571])
    check("dpo", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)


def test_ipo_by_hand(batch):
    # τ = --beta = 0.1; length-averaged log-ratios; m = a/|y_w| - b/|y_l|; loss = (m - 1/(2τ))²
    # target 1/(2·0.1) = 5
    # A: a/|y_w| = 0.5/2 = 0.25, b/|y_l| = -0.5/4 = -0.125, m = 0.375
    #    loss = (0.375 - 5)² = (-4.625)² = 21.390625
    #    rewards β·(per-token log-ratio): 0.1·0.25 = 0.025, 0.1·(-0.125) = -0.0125
    # B: a/|y_w| = -1/5 = -0.2, b/|y_l| = 0/2 = 0, m = -0.2
    #    loss = (-0.2 - 5)² = 27.04;  rewards -0.02, 0
    losses = [(0.375 - 5) ** 2, (-0.2 - 5) ** 2]
    assert losses == pytest.approx([21.390625, 27.04])
    check("ipo", batch, losses, [0.025, -0.02], [-0.0125, 0.0], beta=0.1)


def test_ipo_with_one_token_responses_is_the_summed_form(batch):
    # without lengths every response counts as one token: m = a - b
    # A: m = 0.5 - (-0.5) = 1;  τ = 0.5 -> target 1/(2·0.5) = 1;  loss = (1 - 1)² = 0
    # B: m = -1 - 0 = -1;  loss = (-1 - 1)² = 4
    unit = PreferenceBatch(
        batch.policy_chosen_logps,
        batch.policy_rejected_logps,
        batch.reference_chosen_logps,
        batch.reference_rejected_logps,
    )
    check("ipo", unit, [0.0, 4.0], [0.25, -0.5], [-0.25, 0.0], beta=0.5)


def test_slic_by_hand(batch):
    # δ = 0.5, λ = 0.1, no reference: loss = max(0, δ - logp_w + logp_l) - λ·logp_w; rewards are the log-probs
    # A: max(0, 0.5 - (-2) + (-3)) = max(0, -0.5) = 0;  - 0.1·(-2) = +0.2;  loss = 0.2
    # B: max(0, 0.5 - (-4) + (-3.5)) = max(0, 1.0) = 1.0;  - 0.1·(-4) = +0.4;  loss = 1.4
    losses = [max(0.0, 0.5 + 2 - 3) + 0.1 * 2, max(0.0, 0.5 + 4 - 3.5) + 0.1 * 4]
    assert losses == pytest.approx([0.2, 1.4])
    check("slic", batch, losses, [-2.0, -4.0], [-3.0, -3.5], delta=0.5, sft_weight=0.1)


def test_slic_needs_no_reference(batch):
    no_ref = PreferenceBatch(batch.policy_chosen_logps, batch.policy_rejected_logps)
    check("slic", no_ref, [0.2, 1.4], [-2.0, -4.0], [-3.0, -3.5], delta=0.5, sft_weight=0.1)


def test_flex_by_hand(batch):
    # β_w = 0.1, β_l = 0.05: loss = -log σ(β_w·a - β_l·b); rewards β_w·a, β_l·b
    # A: r_w = 0.1·0.5 = 0.05, r_l = 0.05·(-0.5) = -0.025, z = 0.075;  -log σ(0.075) ≈ 0.656350
    # B: r_w = 0.1·(-1) = -0.1, r_l = 0.05·0 = 0, z = -0.1;  -log σ(-0.1) ≈ 0.744397
    losses = [-log_sigmoid(0.075), -log_sigmoid(-0.1)]
    assert losses == pytest.approx([0.6563501408267951, 0.744396660073571])
    check("flex", batch, losses, [0.05, -0.1], [-0.025, 0.0], beta_chosen=0.1, beta_rejected=0.05)


def test_dpo_sft_by_hand(batch):
    # β = 0.1, α = 0.5: loss = -log σ(h) - α·logp_w/|y_w|  (the DPO part as in test_dpo_by_hand)
    # A: -log σ(0.1) ≈ 0.644397;  -α·logp_w/|y_w| = -0.5·(-2)/2 = 0.5;  loss ≈ 1.144397
    # B: -log σ(-0.1) ≈ 0.744397;  -0.5·(-4)/5 = 0.4;  loss ≈ 1.144397
    losses = [-log_sigmoid(0.1) + 0.5 * 2 / 2, -log_sigmoid(-0.1) + 0.5 * 4 / 5]
    check("dpo-sft", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1, sft_weight=0.5)


def test_cdpo_by_hand(batch):
    # β = 0.1, ε = 0.1: loss = -(1-ε)·log σ(h) - ε·log σ(-h)
    # A: h = 0.1: 0.9·0.644397 + 0.1·0.744397 = 0.579957 + 0.074440 ≈ 0.654397
    # B: h = -0.1: 0.9·0.744397 + 0.1·0.644397 = 0.669957 + 0.064440 ≈ 0.734397
    losses = [
        -0.9 * log_sigmoid(0.1) - 0.1 * log_sigmoid(-0.1),
        -0.9 * log_sigmoid(-0.1) - 0.1 * log_sigmoid(0.1),
    ]
    assert losses == pytest.approx([0.6543966600735709, 0.734396660073571])
    check("cdpo", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1, label_smoothing=0.1)


def test_robust_by_hand(batch):
    # β = 0.1, ε = 0.1: loss = [(1-ε)·(-log σ(h)) - ε·(-log σ(-h))] / (1 - 2ε)
    # A: (0.9·0.644397 - 0.1·0.744397) / 0.8 = (0.579957 - 0.074440) / 0.8 ≈ 0.631897
    # B: (0.9·0.744397 - 0.1·0.644397) / 0.8 = (0.669957 - 0.064440) / 0.8 ≈ 0.756897
    losses = [
        (0.9 * -log_sigmoid(0.1) - 0.1 * -log_sigmoid(-0.1)) / 0.8,
        (0.9 * -log_sigmoid(-0.1) - 0.1 * -log_sigmoid(0.1)) / 0.8,
    ]
    assert losses == pytest.approx([0.6318966600735709, 0.756896660073571])
    check("robust", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1, label_smoothing=0.1)


def test_simpo_by_hand(batch):
    # β = 2, γ = 0.5, no reference: loss = -log σ(β·logp_w/|y_w| - β·logp_l/|y_l| - γ); rewards β·logp/|y|
    # A: r_w = 2·(-2)/2 = -2,   r_l = 2·(-3)/4 = -1.5,  z = -2 + 1.5 - 0.5 = -1;  -log σ(-1) = log(1+e) ≈ 1.313262
    # B: r_w = 2·(-4)/5 = -1.6, r_l = 2·(-3.5)/2 = -3.5, z = -1.6 + 3.5 - 0.5 = 1.4;  -log σ(1.4) ≈ 0.220417
    losses = [-log_sigmoid(-1.0), -log_sigmoid(1.4)]
    assert losses == pytest.approx([1.3132616875182228, 0.22041740991845094])
    check("simpo", batch, losses, [-2.0, -1.6], [-1.5, -3.5], beta=2.0, gamma=0.5)
    no_ref = PreferenceBatch(
        batch.policy_chosen_logps,
        batch.policy_rejected_logps,
        chosen_lengths=batch.chosen_lengths,
        rejected_lengths=batch.rejected_lengths,
    )
    check("simpo", no_ref, losses, [-2.0, -1.6], [-1.5, -3.5], beta=2.0, gamma=0.5)


def test_dpop_by_hand(batch):
    # β = 0.1, λ = 50: loss = -log σ(β[a - b - λ·max(0, ref_w - logp_w)]); rewards β·a, β·b
    # A: max(0, -2.5 - (-2)) = max(0, -0.5) = 0: no penalty, z = 0.1·(0.5 + 0.5) = 0.1;  ≈ 0.644397 (= DPO)
    # B: max(0, -3 - (-4)) = 1, penalty 50·1 = 50;  z = 0.1·(-1 - 0 - 50) = -5.1;  log(1 + e^5.1) ≈ 5.106078
    losses = [-log_sigmoid(0.1), -log_sigmoid(-5.1)]
    assert losses == pytest.approx([0.6443966600735709, 5.106078236601779])
    check("dpop", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1, dpop_lambda=50.0)


def test_hinge_by_hand(batch):
    # β = 0.1: loss = max(0, 1 - h)
    # A: h = 0.1 -> 1 - 0.1 = 0.9;   B: h = -0.1 -> 1 + 0.1 = 1.1
    # β = 2:  A: h = 2·1 = 2 -> max(0, -1) = 0 (past the margin);  B: h = 2·(-1) = -2 -> 3
    check("hinge", batch, [0.9, 1.1], [0.05, -0.1], [-0.05, 0.0], beta=0.1)
    check("hinge", batch, [0.0, 3.0], [1.0, -2.0], [-1.0, 0.0], beta=2.0)


def test_nca_by_hand(batch):
    # β = 0.1: loss = -log σ(r_w) - ½·log σ(-r_w) - ½·log σ(-r_l)
    # A: r_w = 0.05, r_l = -0.05: -log σ(0.05) - ½ log σ(-0.05) - ½ log σ(0.05) ≈ 1.361919
    # B: r_w = -0.1, r_l = 0:     -log σ(-0.1) - ½ log σ(0.1) - ½ log σ(0) ≈ 1.413169
    losses = [
        -log_sigmoid(0.05) - 0.5 * log_sigmoid(-0.05) - 0.5 * log_sigmoid(0.05),
        -log_sigmoid(-0.1) - 0.5 * log_sigmoid(0.1) - 0.5 * log_sigmoid(0.0),
    ]
    assert losses == pytest.approx([1.3619192960265725, 1.413168580390329])
    check("nca", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)


def test_apo_zero_by_hand(batch):
    # β = 0.1: loss = (1 - σ(r_w)) + σ(r_l)
    # A: 1 - σ(0.05) + σ(-0.05) = 1 - 0.512497 + 0.487503 ≈ 0.975005
    # B: 1 - σ(-0.1) + σ(0) = 1 - 0.475021 + 0.5 ≈ 1.024979
    losses = [1 - sigmoid(0.05) + sigmoid(-0.05), 1 - sigmoid(-0.1) + sigmoid(0.0)]
    assert losses == pytest.approx([0.9750052070315793, 1.02497918747894])
    check("apo-zero", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)


def test_apo_down_by_hand(batch):
    # β = 0.1: loss = σ(r_w) + (1 - σ(r_w - r_l))
    # A: σ(0.05) + 1 - σ(0.05 + 0.05) = 0.512497 + 1 - 0.524979 ≈ 0.987518
    # B: σ(-0.1) + 1 - σ(-0.1 - 0) = 1 exactly
    losses = [sigmoid(0.05) + 1 - sigmoid(0.1), sigmoid(-0.1) + 1 - sigmoid(-0.1)]
    assert losses == pytest.approx([0.9875182090052703, 1.0])
    check("apo-down", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)


def test_sppo_hard_by_hand(batch):
    # β = 0.1: loss = (a - 1/(2β))² + (b + 1/(2β))², 1/(2·0.1) = 5
    # A: (0.5 - 5)² + (-0.5 + 5)² = 20.25 + 20.25 = 40.5
    # B: (-1 - 5)² + (0 + 5)² = 36 + 25 = 61
    losses = [(0.5 - 5) ** 2 + (-0.5 + 5) ** 2, (-1 - 5) ** 2 + (0 + 5) ** 2]
    assert losses == [40.5, 61.0]
    check("sppo-hard", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)


def test_exo_by_hand(batch):
    # β = 0.1, ε = 1e-3: loss = σ(h)(log σ(h) - log(1-ε)) + σ(-h)(log σ(-h) - log ε)
    # A: h = 0.1: σ(0.1) ≈ 0.524979, log σ(0.1) ≈ -0.644397, log 0.999 ≈ -0.0010005
    #    0.524979·(-0.644397 + 0.0010005) + 0.475021·(-0.744397 + 6.907755) ≈ 2.589954
    # B: h = -0.1: the same with the two sides swapped ≈ 2.935004
    eps = 1e-3
    losses = [
        sigmoid(0.1) * (log_sigmoid(0.1) - math.log(1 - eps))
        + sigmoid(-0.1) * (log_sigmoid(-0.1) - math.log(eps)),
        sigmoid(-0.1) * (log_sigmoid(-0.1) - math.log(1 - eps))
        + sigmoid(0.1) * (log_sigmoid(0.1) - math.log(eps)),
    ]
    assert losses == pytest.approx([2.5899540258452562, 2.93500427081911])
    check("exo", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1, label_smoothing=eps)


def test_bco_by_hand(batch):
    # β = 0.1: rewards r_w = (0.05, -0.1), r_l = (-0.05, 0)
    # δ = mean of all four rewards = (0.05 - 0.1 - 0.05 + 0)/4 = -0.025
    # loss = -log σ(r_w - δ) - log σ(-(r_l - δ))
    # A: -log σ(0.05 + 0.025) - log σ(-(-0.05 + 0.025)) = -log σ(0.075) - log σ(0.025) ≈ 1.337075
    # B: -log σ(-0.1 + 0.025) - log σ(-(0 + 0.025))   = -log σ(-0.075) - log σ(-0.025) ≈ 1.437075
    losses = [-log_sigmoid(0.075) - log_sigmoid(0.025), -log_sigmoid(-0.075) - log_sigmoid(-0.025)]
    assert losses == pytest.approx([1.3370754443523198, 1.43707544435232])
    check("bco", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)


def test_margins_are_chosen_minus_rejected_rewards(batch):
    # DPO, β = 0.1: margins = r_w - r_l = (0.05 + 0.05, -0.1 - 0) = (0.1, -0.1) = h
    out = compute_loss("dpo", batch, beta=0.1)
    assert out.margins.tolist() == pytest.approx([0.1, -0.1], rel=1e-12)


def test_paper_defaults():
    # App. D.1: β = 0.1 for DPO, τ = 0.1 for IPO
    assert LOSSES["dpo"].defaults["beta"] == 0.1
    assert LOSSES["ipo"].defaults["beta"] == 0.1
