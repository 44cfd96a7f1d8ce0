"""Issue 14's losses against numbers worked by hand, on test_losses_by_hand.py's two pairs.

    pair A: logp_w = -2, logp_l = -3, ref_w = -2.5, ref_l = -2.5, |y_w| = 2, |y_l| = 4;  a = 0.5, b = -0.5
    pair B: logp_w = -4, logp_l = -3.5, ref_w = -3, ref_l = -3.5, |y_w| = 5, |y_l| = 2;  a = -1,  b = 0

Token-level extras, from per-token log-probs (the same grid as test_losses_trl.py):
    policy  A: chosen [-0.5, -1.5], rejected [-1, -0.5, -1, -0.5];  B: chosen [-1, -0.5, -1, -0.5, -1], rejected [-2, -1.5]
    reference A: chosen [-1, -1.5], rejected [-0.5, -0.5, -1, -0.5]; B: chosen [-0.5, -0.5, -0.5, -0.5, -1], rejected [-1.5, -2]
    shared length: A min(2, 4) = 2, B min(5, 2) = 2, so the shared sums are
        A: policy chosen -2, rejected -1.5; reference chosen -2.5, rejected -1      (first two tokens)
        B: policy chosen -1.5, rejected -3.5; reference chosen -1, rejected -3.5
    WPO: log Σ_v π(v)² = -0.3 at every chosen token, -0.6 at every rejected token, so the
        log-weights mean_t(logp_t + 0.3) etc. are A: (-2 + 0.6)/2 = -0.7, (-3 + 2.4)/4 = -0.15;
        B: (-4 + 1.5)/5 = -0.5, (-3.5 + 1.2)/2 = -1.15.
Expected values are computed with ``math`` from the arithmetic in the comments.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dpo3d.losses import PreferenceBatch, compute_loss, get_loss

from .test_losses_by_hand import check, hand_batch, log_sigmoid, sigmoid, values


@pytest.fixture
def batch() -> PreferenceBatch:
    """test_losses_by_hand's pairs, with the token-level inputs LD-DPO and WPO take."""
    return dataclasses.replace(
        hand_batch(),
        policy_chosen_shared_logps=values(-2.0, -1.5),
        policy_rejected_shared_logps=values(-1.5, -3.5),
        reference_chosen_shared_logps=values(-2.5, -1.0),
        reference_rejected_shared_logps=values(-1.0, -3.5),
        chosen_wpo_logweights=values(-0.7, -0.5),
        rejected_wpo_logweights=values(-0.15, -1.15),
    )


def test_adadpo_by_hand(batch):
    # β = 0.1, C = 2: β_w = β·min(x1/x2, C) with x1/x2 = exp(logp_w - logp_l)
    # A: exp(-2 + 3) = e ≈ 2.718 > 2, clipped: β_w = 0.2; z = 0.2·0.5 - 0.1·(-0.5) = 0.15
    # B: exp(-4 + 3.5) = e^-0.5 ≈ 0.606531: β_w = 0.0606531; z = 0.0606531·(-1) - 0.1·0 = -0.0606531
    bw = 0.1 * math.exp(-0.5)
    check("adadpo", batch, [-log_sigmoid(0.15), -log_sigmoid(-bw)], [0.1, -bw], [-0.05, 0.0], beta=0.1, clip=2.0)
    # per_token: A: -2/2 - (-3/4) = -0.25, β_w = 0.1·e^-0.25;  B: -4/5 - (-3.5/2) = 0.95, β_w = 0.1·e^0.95 ≈ 0.2586 -> clip 0.2
    bw_a = 0.1 * math.exp(-0.25)
    check(
        "adadpo", batch, [-log_sigmoid(bw_a * 0.5 + 0.05), -log_sigmoid(-0.2)], [bw_a * 0.5, -0.2], [-0.05, 0.0],
        beta=0.1, clip=2.0, per_token=True,
    )  # fmt: skip
    # use_reference: balance (x1/ref_w)/(x2/ref_l) = exp(a - b): A e^1 -> 2 (clip), B e^-1
    bw_b = 0.1 * math.exp(-1.0)
    check("adadpo", batch, [-log_sigmoid(0.15), -log_sigmoid(-bw_b)], [0.1, -bw_b], [-0.05, 0.0], use_reference=True)


def test_bpo_by_hand(batch):
    # β = 0.1, α = 0.3: loss = -log σ(min(r_w, -α·r_l))
    # A: r_w = 0.05, -α·r_l = -0.3·(-0.05) = 0.015 -> min 0.015
    # B: r_w = -0.1, -α·r_l = 0 -> min -0.1
    check("bpo", batch, [-log_sigmoid(0.015), -log_sigmoid(-0.1)], [0.05, -0.1], [-0.05, 0.0], beta=0.1, alpha=0.3)
    # α = 1: A: min(0.05, 0.05) = 0.05
    check("bpo", batch, [-log_sigmoid(0.05), -log_sigmoid(-0.1)], [0.05, -0.1], [-0.05, 0.0], alpha=1.0)


def test_bdpo_by_hand(batch):
    # β = 0.1, λ = 0.5: log π_mix(y_l) = log(0.5·e^logp_l + 0.5·e^ref_l)
    # A: log(0.5·e^-3 + 0.5·e^-2.5) ≈ -2.719070; rejected reward 0.1·(-2.719070 + 2.5) ≈ -0.0219070
    #    z = 0.05 + 0.0219070 = 0.0719070
    # B: logp_l = ref_l = -3.5, so π_mix = π_ref: rejected reward 0; z = -0.1
    mixed = math.log(0.5 * math.exp(-3) + 0.5 * math.exp(-2.5))
    assert mixed == pytest.approx(-2.7190702, abs=1e-6)
    r_l = 0.1 * (mixed + 2.5)
    check("bdpo", batch, [-log_sigmoid(0.05 - r_l), -log_sigmoid(-0.1)], [0.05, -0.1], [r_l, 0.0], beta=0.1, mix=0.5)
    # λ = 1 is DPO
    check("bdpo", batch, [-log_sigmoid(0.1), -log_sigmoid(-0.1)], [0.05, -0.1], [-0.05, 0.0], mix=1.0)


def test_aot_by_hand(batch):
    # policy margins logp_w - logp_l: A 1, B -0.5 -> sorted [-0.5, 1]
    # reference margins ref_w - ref_l: A 0, B 0.5 -> sorted [0, 0.5]
    # Δ = [-0.5, 0.5]; β = 0.1: losses -log σ(-0.05), -log σ(0.05) (by sorted position)
    check("aot", batch, [-log_sigmoid(-0.05), -log_sigmoid(0.05)], [0.05, -0.1], [-0.05, 0.0], beta=0.1)
    # ε = 0.1: -(0.9)·log σ(βΔ) - 0.1·log σ(-βΔ)
    smoothed = [-0.9 * log_sigmoid(z) - 0.1 * log_sigmoid(-z) for z in (-0.05, 0.05)]
    check("aot", batch, smoothed, [0.05, -0.1], [-0.05, 0.0], beta=0.1, label_smoothing=0.1)


def test_aot_unpaired_by_hand(batch):
    # chosen log-ratios a = [0.5, -1] -> sorted [-1, 0.5]; rejected b = [-0.5, 0] -> sorted [-0.5, 0]
    # Δ = [-1 + 0.5, 0.5 - 0] = [-0.5, 0.5]  (this batch gives aot's values; a reordering does not)
    check("aot-unpaired", batch, [-log_sigmoid(-0.05), -log_sigmoid(0.05)], [0.05, -0.1], [-0.05, 0.0], beta=0.1)
    # swap pair B's rejected for one above its reference: b = [-0.5, 2] -> sorted [-0.5, 2]; Δ = [-0.5, -1.5]
    shifted = PreferenceBatch(
        batch.policy_chosen_logps, torch.tensor([-3.0, -1.5], dtype=torch.float64),
        batch.reference_chosen_logps, batch.reference_rejected_logps,
    )  # fmt: skip
    check("aot-unpaired", shifted, [-log_sigmoid(-0.05), -log_sigmoid(-0.15)], [0.05, -0.1], [-0.05, 0.2], beta=0.1)


def test_discopop_by_hand(batch):
    # β = 0.1, τ = 0.05: m = σ(h/τ); loss = (1 - m)·(-log σ(h)) + m·e^-h
    # A: h = 0.1, m = σ(2) ≈ 0.880797: 0.119203·0.644397 + 0.880797·0.904837 ≈ 0.873792
    # B: h = -0.1, m = σ(-2) ≈ 0.119203: 0.880797·0.744397 + 0.119203·1.105171 ≈ 0.787402
    losses = [(1 - sigmoid(h / 0.05)) * -log_sigmoid(h) + sigmoid(h / 0.05) * math.exp(-h) for h in (0.1, -0.1)]
    assert losses == pytest.approx([0.873792, 0.787402], abs=1e-6)
    check("discopop", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1, tau=0.05)


def test_sigmoid_norm_by_hand(batch):
    # β = 0.1, per-token log-ratios: A a/2 = 0.25, b/4 = -0.125 -> z = 0.1·0.375 = 0.0375
    #                                B a/5 = -0.2, b/2 = 0      -> z = -0.02
    check("sigmoid-norm", batch, [-log_sigmoid(0.0375), -log_sigmoid(-0.02)], [0.025, -0.02], [-0.0125, 0.0], beta=0.1)


def test_bco_pair_by_hand(batch):
    # β = 0.1, no shift: loss = -log σ(r_w) - log σ(-r_l)
    # A: -log σ(0.05) - log σ(0.05);  B: -log σ(-0.1) - log σ(0)
    losses = [-2 * log_sigmoid(0.05), -log_sigmoid(-0.1) - log_sigmoid(0.0)]
    check("bco-pair", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)


def test_bco_keeps_the_papers_reward_shift_and_bco_pair_drops_it(batch):
    # BCO (Jung et al. 2024) shifts both rewards by δ, a running mean of past rewards; dpo3d's bco
    # uses the batch's mean reward (δ = -0.025 here), TRL 1.16's bco_pair uses δ = 0
    shift = (0.05 - 0.1 - 0.05 + 0.0) / 4
    bco = compute_loss("bco", batch).losses.tolist()
    assert bco == pytest.approx([-log_sigmoid(0.05 - shift) - log_sigmoid(-(-0.05 - shift)),
                                 -log_sigmoid(-0.1 - shift) - log_sigmoid(-(0.0 - shift))], rel=1e-12)  # fmt: skip
    assert bco != pytest.approx(compute_loss("bco-pair", batch).losses.tolist(), rel=1e-6)


def test_fdpo_forward_kl_by_hand(batch):
    # s(u) = 1 - 1/u = 1 - e^-a.  A: s_w - s_l = (1 - e^-0.5) - (1 - e^0.5) = 2·sinh(0.5) ≈ 1.042191
    #                             B: (1 - e^1) - (1 - e^0) = 1 - e ≈ -1.718282
    sw_a, sl_a, sw_b = 1 - math.exp(-0.5), 1 - math.exp(0.5), 1 - math.e
    check(
        "fdpo-forward-kl", batch, [-log_sigmoid(0.1 * (sw_a - sl_a)), -log_sigmoid(0.1 * sw_b)],
        [0.1 * sw_a, 0.1 * sw_b], [0.1 * sl_a, 0.0], beta=0.1,
    )  # fmt: skip


def test_fdpo_js_by_hand(batch):
    # s(u) = log 2 + log σ(a).  A: log σ(0.5) - log σ(-0.5) = 0.5 exactly (log σ(x) - log σ(-x) = x)
    #                          B: log σ(-1) - log σ(0) ≈ -1.313262 + 0.693147 = -0.620115
    s = lambda a: math.log(2) + log_sigmoid(a)  # noqa: E731
    check(
        "fdpo-js", batch, [-log_sigmoid(0.05), -log_sigmoid(0.1 * (s(-1) - s(0)))],
        [0.1 * s(0.5), 0.1 * s(-1)], [0.1 * s(-0.5), 0.1 * s(0)], beta=0.1,
    )  # fmt: skip


def test_fdpo_alpha_by_hand(batch):
    # α = 0.5: s(u) = (u^(α-1) - 1)/(α-1) = 2(1 - e^(-a/2)).  A: s_w - s_l = 2(e^0.25 - e^-0.25) ≈ 1.010449
    #                                                         B: 2(1 - e^0.5) ≈ -1.297443, s_l = 0
    s = lambda a: 2 * (1 - math.exp(-a / 2))  # noqa: E731
    assert s(0.5) - s(-0.5) == pytest.approx(1.010449, abs=1e-6)
    check(
        "fdpo-alpha", batch, [-log_sigmoid(0.1 * (s(0.5) - s(-0.5))), -log_sigmoid(0.1 * s(-1))],
        [0.1 * s(0.5), 0.1 * s(-1)], [0.1 * s(-0.5), 0.0], beta=0.1, alpha=0.5,
    )  # fmt: skip
    # α -> 1 is DPO
    check("fdpo-alpha", batch, [-log_sigmoid(0.1), -log_sigmoid(-0.1)], [0.05, -0.1], [-0.05, 0.0], alpha=1.0)


def test_ld_dpo_by_hand(batch):
    # α = 0.5: l̃ = shared + α·(total - shared), policy and reference alike
    # A: chosen  policy -2 + 0.5·0 = -2,        reference -2.5 + 0 = -2.5      -> ã = 0.5
    #    rejected policy -1.5 + 0.5·(-1.5) = -2.25, reference -1 + 0.5·(-1.5) = -1.75 -> b̃ = -0.5;  z = 0.1
    # B: chosen  policy -1.5 + 0.5·(-2.5) = -2.75, reference -1 + 0.5·(-2) = -2 -> ã = -0.75
    #    rejected: whole length shared, b̃ = -3.5 + 3.5 = 0;  z = -0.075
    check("ld-dpo", batch, [-log_sigmoid(0.1), -log_sigmoid(-0.075)], [0.05, -0.075], [-0.05, 0.0], beta=0.1, ld_alpha=0.5)
    # α = 1 is DPO
    check("ld-dpo", batch, [-log_sigmoid(0.1), -log_sigmoid(-0.1)], [0.05, -0.1], [-0.05, 0.0], ld_alpha=1.0)


def test_wpo_by_hand(batch):
    # w = exp(w_w + w_l): A exp(-0.7 - 0.15) = e^-0.85 ≈ 0.427415, B exp(-0.5 - 1.15) = e^-1.65 ≈ 0.192050
    losses = [math.exp(-0.85) * -log_sigmoid(0.1), math.exp(-1.65) * -log_sigmoid(-0.1)]
    check("wpo", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)


def test_orpo_by_hand(batch):
    # λ = β = 0.1; per-token means: A chosen -1, rejected -0.75; B chosen -0.8, rejected -1.75
    # log odds(m) = m - log(1 - e^m)
    odds = lambda m: m - math.log(1 - math.exp(m))  # noqa: E731
    # A: odds(-1) ≈ -0.541325, odds(-0.75) ≈ -0.110647, difference ≈ -0.430678
    assert odds(-1) - odds(-0.75) == pytest.approx(-0.430678, abs=1e-6)
    losses = [1.0 - 0.1 * log_sigmoid(odds(-1) - odds(-0.75)), 0.8 - 0.1 * log_sigmoid(odds(-0.8) - odds(-1.75))]
    check("orpo", batch, losses, [-0.1, -0.08], [-0.075, -0.175], beta=0.1)


def test_cpo_by_hand(batch):
    # β = 0.1, α = 1: -log σ(β(logp_w - logp_l)) - α·logp_w/|y_w|
    # A: -log σ(0.1·1) + 2/2;  B: -log σ(0.1·(-0.5)) + 4/5;  rewards β·logp
    losses = [-log_sigmoid(0.1) + 1.0, -log_sigmoid(-0.05) + 0.8]
    check("cpo", batch, losses, [-0.2, -0.4], [-0.3, -0.35], beta=0.1, sft_weight=1.0)


def test_rdpo_by_hand(batch):
    # β = 0.1, α = 0.01: z = h + α(|y_w| - |y_l|)
    # A: 0.1 + 0.01·(2 - 4) = 0.08;  B: -0.1 + 0.01·(5 - 2) = -0.07
    check("rdpo", batch, [-log_sigmoid(0.08), -log_sigmoid(-0.07)], [0.05, -0.1], [-0.05, 0.0], beta=0.1, alpha=0.01)


def test_sft_by_hand(batch):
    # -logp_w/|y_w|: A 2/2 = 1, B 4/5 = 0.8; rewards the per-token log-probs
    check("sft", batch, [1.0, 0.8], [-1.0, -0.8], [-0.75, -1.75])


def test_mixture_by_hand(batch):
    # dpo:0.8,bco-pair:0.2,sft:1 per pair: 0.8·dpo + 0.2·bco_pair + 1·sft
    dpo = [-log_sigmoid(0.1), -log_sigmoid(-0.1)]
    bco_pair = [-2 * log_sigmoid(0.05), -log_sigmoid(-0.1) - log_sigmoid(0.0)]
    losses = [0.8 * d + 0.2 * b + s for d, b, s in zip(dpo, bco_pair, [1.0, 0.8], strict=True)]
    check("dpo:0.8,bco-pair:0.2,sft", batch, losses, [0.05, -0.1], [-0.05, 0.0], beta=0.1)
    assert get_loss("dpo:0.8, bco-pair:0.2 ,sft").name == "dpo:0.8,bco-pair:0.2,sft:1"
    # a qualified option sets one part: bco-pair.beta = 0.2 doubles its rewards, dpo keeps β = 0.1
    bco_02 = [-2 * log_sigmoid(0.1), -log_sigmoid(-0.2) - log_sigmoid(0.0)]
    losses = [0.8 * d + 0.2 * b + s for d, b, s in zip(dpo, bco_02, [1.0, 0.8], strict=True)]
    out = compute_loss("dpo:0.8,bco-pair:0.2,sft", batch, **{"bco-pair.beta": 0.2})
    assert out.losses.tolist() == pytest.approx(losses, rel=1e-12)
