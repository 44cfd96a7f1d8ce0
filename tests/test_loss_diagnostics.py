"""The 3D gradient diagnostics against the closed forms of PAPER.md (Gradients section).

x1 = π(y_w|x) = exp(logp_w), x2 = π(y_l|x) = exp(logp_l). The diagnostics return
∂L/∂logp (signed) and log|∂L/∂x|; the signed ∂L/∂x is ∂L/∂logp / x. Expected values
are computed with ``math`` in float64 from moderate log-probs, so exp() is safe.
"""

from __future__ import annotations

import math

import pytest
import torch

from dpo3d.losses import LOSSES, PreferenceBatch, bind_loss, gradient_diagnostics

# (logp_w, logp_l, ref_w, ref_l): moderate values, the chosen above and below the rejected
CASES = [
    (-1.2, -2.3, -1.5, -1.9),
    (-3.0, -0.7, -2.0, -1.0),
    (-0.4, -6.0, -0.9, -2.5),
    (-5.0, -5.0, -4.0, -6.5),
]


def one_pair(logp_w, logp_l, ref_w, ref_l, len_w=None, len_l=None) -> PreferenceBatch:
    t = lambda v: None if v is None else torch.tensor([v], dtype=torch.float64)  # noqa: E731
    return PreferenceBatch(t(logp_w), t(logp_l), t(ref_w), t(ref_l), t(len_w), t(len_l))


def signed_dx(diag) -> tuple[float, float]:
    """(∂L/∂x1, ∂L/∂x2) from the log-magnitudes and the signs of ∂L/∂logp."""
    d1 = math.copysign(math.exp(diag.log_abs_grad_chosen.item()), diag.chosen_logp_grad.item())
    d2 = math.copysign(math.exp(diag.log_abs_grad_rejected.item()), diag.rejected_logp_grad.item())
    return d1, d2


@pytest.mark.parametrize(("logp_w", "logp_l", "ref_w", "ref_l"), CASES)
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_closed_forms(logp_w, logp_l, ref_w, ref_l, beta):
    x1, x2 = math.exp(logp_w), math.exp(logp_l)
    # K = (π_ref(y_w)/π_ref(y_l))^β
    K = (math.exp(ref_w) / math.exp(ref_l)) ** beta
    denominator = x1**beta + K * x2**beta
    # L = -log(x1^β / (x1^β + K·x2^β))   (= -log σ(h))
    loss = -math.log(x1**beta / denominator)
    # ∂L/∂x1 = -β·K·x2^β / (x1·(x1^β + K·x2^β))
    dx1 = -beta * K * x2**beta / (x1 * denominator)
    # ∂L/∂x2 = β·K·x2^(β-1) / (x1^β + K·x2^β)
    dx2 = beta * K * x2 ** (beta - 1) / denominator

    batch = one_pair(logp_w, logp_l, ref_w, ref_l)
    assert LOSSES["dpo"](batch, beta=beta).losses.item() == pytest.approx(loss, rel=1e-12)
    diag = gradient_diagnostics(bind_loss("dpo", {"beta": beta}), batch)
    assert diag.log_abs_grad_chosen.item() == pytest.approx(math.log(abs(dx1)), rel=1e-12, abs=1e-12)
    assert diag.log_abs_grad_rejected.item() == pytest.approx(math.log(abs(dx2)), rel=1e-12, abs=1e-12)
    got1, got2 = signed_dx(diag)
    assert got1 == pytest.approx(dx1, rel=1e-10)
    assert got2 == pytest.approx(dx2, rel=1e-10)
    # Corollary 1: (∂L/∂x2) / (∂L/∂x1) = -x1/x2
    assert got2 / got1 == pytest.approx(-x1 / x2, rel=1e-10)
    # in log space both sides get β·σ(-h), with opposite signs
    h = beta * ((logp_w - ref_w) - (logp_l - ref_l))
    assert diag.chosen_logp_grad.item() == pytest.approx(-beta / (1 + math.exp(h)), rel=1e-12)
    assert diag.rejected_logp_grad.item() == pytest.approx(beta / (1 + math.exp(h)), rel=1e-12)
    # log|∂L/∂x2| - log|∂L/∂x1| = logp_w - logp_l
    assert diag.log_ratio.item() == pytest.approx(logp_w - logp_l, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_dpo_log_ratio_identity_for_random_inputs(seed):
    # property: for any pair and any β, log|∂L/∂x2| - log|∂L/∂x1| = logp_w - logp_l
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(4, 512, generator=g, dtype=torch.float64) * 400
    beta = float(torch.rand(1, generator=g)) + 0.01
    batch = PreferenceBatch(*logps)
    diag = gradient_diagnostics(bind_loss("dpo", {"beta": beta}), batch)
    torch.testing.assert_close(diag.log_ratio, logps[0] - logps[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize(("logp_w", "logp_l", "ref_w", "ref_l"), CASES)
def test_flex_ratio(logp_w, logp_l, ref_w, ref_l):
    beta_w, beta_l = 0.1, 0.03
    x1, x2 = math.exp(logp_w), math.exp(logp_l)
    # z = β_w(logp_w - ref_w) - β_l(logp_l - ref_l);  ∂L/∂logp_w = -β_w σ(-z), ∂L/∂logp_l = β_l σ(-z)
    z = beta_w * (logp_w - ref_w) - beta_l * (logp_l - ref_l)
    s = 1 / (1 + math.exp(z))  # σ(-z)
    dx1, dx2 = -beta_w * s / x1, beta_l * s / x2
    diag = gradient_diagnostics(bind_loss("flex", {"beta_chosen": beta_w, "beta_rejected": beta_l}), one_pair(logp_w, logp_l, ref_w, ref_l))
    got1, got2 = signed_dx(diag)
    assert got1 == pytest.approx(dx1, rel=1e-10)
    assert got2 == pytest.approx(dx2, rel=1e-10)
    # (∂L/∂x2)/(∂L/∂x1) = -(β_l/β_w)·(x1/x2): a smaller β_l slows the drop
    assert got2 / got1 == pytest.approx(-(beta_l / beta_w) * (x1 / x2), rel=1e-10)
    assert diag.log_ratio.item() == pytest.approx(math.log(beta_l / beta_w) + logp_w - logp_l, abs=1e-12)


@pytest.mark.parametrize(("logp_w", "logp_l", "ref_w", "ref_l"), CASES)
@pytest.mark.parametrize("len_w", [1, 7])
def test_dpo_sft_closed_forms(logp_w, logp_l, ref_w, ref_l, len_w):
    beta, alpha = 0.1, 0.8
    x1, x2 = math.exp(logp_w), math.exp(logp_l)
    K = (math.exp(ref_w) / math.exp(ref_l)) ** beta
    denominator = x1**beta + K * x2**beta
    # L = -log(x1^β/(x1^β + K x2^β)) - α·log(x1)/|y_w|
    # ∂L/∂x1 = -β·K·x2^β / (x1(x1^β + K x2^β)) - α/(|y_w|·x1)
    dx1 = -beta * K * x2**beta / (x1 * denominator) - alpha / (len_w * x1)
    # ∂L/∂x2 is DPO's: β·K·x2^(β-1) / (x1^β + K x2^β)
    dx2 = beta * K * x2 ** (beta - 1) / denominator
    batch = one_pair(logp_w, logp_l, ref_w, ref_l, len_w, 3)
    diag = gradient_diagnostics(bind_loss("dpo-sft", {"beta": beta, "sft_weight": alpha}), batch)
    got1, got2 = signed_dx(diag)
    assert got1 == pytest.approx(dx1, rel=1e-10)
    assert got2 == pytest.approx(dx2, rel=1e-10)


def test_dpo_sft_chosen_gradient_survives_as_x2_vanishes():
    # Property 2 for DPO: ∂L/∂x1 ∝ x2^β -> 0; dpo-sft keeps ∂L/∂x1 ≈ -α/(|y_w| x1)
    batch = one_pair(-1.0, -200.0, -1.0, -1.0, 4, 4)
    dpo = gradient_diagnostics(bind_loss("dpo", {"beta": 0.1}), batch)
    sft = gradient_diagnostics(bind_loss("dpo-sft", {"beta": 0.1, "sft_weight": 1.0}), batch)
    # DPO: h = 0.1·199 = 19.9, |∂L/∂logp_w| = 0.1·σ(-19.9) ≈ 2.3e-10
    assert abs(dpo.chosen_logp_grad.item()) < 1e-9
    # dpo-sft: ∂L/∂logp_w ≈ -α/|y_w| = -0.25
    assert sft.chosen_logp_grad.item() == pytest.approx(-0.25, rel=1e-8)


@pytest.mark.parametrize(("logp_w", "logp_l", "ref_w", "ref_l"), CASES)
def test_ipo_closed_forms_with_one_token_responses(logp_w, logp_l, ref_w, ref_l):
    tau = 0.1
    x1, x2 = math.exp(logp_w), math.exp(logp_l)
    # m = (logp_w - ref_w) - (logp_l - ref_l);  L = (m - 1/(2τ))²
    m = (logp_w - ref_w) - (logp_l - ref_l)
    # ∂L/∂logp_w = 2(m - 1/(2τ)), so ∂L/∂x1 = 2(m - 1/(2τ))/x1 and ∂L/∂x2 = -2(m - 1/(2τ))/x2.
    # NB: PAPER.md prints these with the opposite signs (-2(m - 1/(2τ))/x1 and +2(m - 1/(2τ))/x2);
    # below the target (m < 1/(2τ)) the loss must fall as x1 rises, i.e. ∂L/∂x1 < 0, as here.
    dx1 = 2 * (m - 1 / (2 * tau)) / x1
    dx2 = -2 * (m - 1 / (2 * tau)) / x2
    diag = gradient_diagnostics(bind_loss("ipo", {"beta": tau}), one_pair(logp_w, logp_l, ref_w, ref_l))
    got1, got2 = signed_dx(diag)
    assert got1 == pytest.approx(dx1, rel=1e-10)
    assert got2 == pytest.approx(dx2, rel=1e-10)
    assert m < 1 / (2 * tau) and got1 < 0 < got2
    # the magnitudes are in the ratio x1/x2, as for DPO
    assert diag.log_ratio.item() == pytest.approx(logp_w - logp_l, abs=1e-12)


def test_ipo_gradients_stop_at_the_target_margin():
    # τ = 0.5: target 1/(2·0.5) = 1; m = (-1 - (-2)) - (-3 - (-3)) = 1 exactly -> zero gradient
    diag = gradient_diagnostics(bind_loss("ipo", {"beta": 0.5}), one_pair(-1.0, -3.0, -2.0, -3.0))
    assert diag.chosen_logp_grad.item() == 0 and diag.rejected_logp_grad.item() == 0
    assert diag.log_abs_grad_chosen.item() == -math.inf
    assert diag.log_abs_grad_rejected.item() == -math.inf


def test_zero_gradient_is_minus_infinity_hinge_past_its_margin():
    # β = 0.1: h = 0.1·((-10 - (-20)) - (-30 - (-20))) = 0.1·20 = 2 > 1, so max(0, 1 - h) = 0 and flat
    diag = gradient_diagnostics(bind_loss("hinge", {"beta": 0.1}), one_pair(-10.0, -30.0, -20.0, -20.0))
    assert diag.chosen_logp_grad.item() == 0 and diag.rejected_logp_grad.item() == 0
    assert diag.log_abs_grad_chosen.item() == -math.inf
    assert diag.log_abs_grad_rejected.item() == -math.inf
    # ... and before the margin it is finite: h = 0.1·(2 - 0) = 0.2 < 1, ∂L/∂logp_w = -β = -0.1
    diag = gradient_diagnostics(bind_loss("hinge", {"beta": 0.1}), one_pair(-18.0, -20.0, -20.0, -20.0))
    assert diag.chosen_logp_grad.item() == pytest.approx(-0.1)
    assert diag.log_abs_grad_chosen.item() == pytest.approx(math.log(0.1) + 18.0)


def test_no_overflow_for_realistic_sequence_log_probs():
    # x1 = e^-300, x2 = e^-800: 1/x2 = e^800 overflows float64 (max ≈ e^709.8), the log form does not
    batch = PreferenceBatch(*(torch.tensor([v]) for v in (-300.0, -800.0, -310.0, -790.0)))  # float32 in
    diag = gradient_diagnostics(bind_loss("dpo", {"beta": 0.1}), batch)
    for tensor in (
        diag.chosen_logp_grad,
        diag.rejected_logp_grad,
        diag.log_abs_grad_chosen,
        diag.log_abs_grad_rejected,
    ):
        assert tensor.dtype == torch.float64
        assert torch.isfinite(tensor).all()
    # h = 0.1·((-300 + 310) - (-800 + 790)) = 0.1·20 = 2;  |∂L/∂logp| = 0.1·σ(-2)
    s = 0.1 / (1 + math.exp(2.0))
    assert diag.log_abs_grad_chosen.item() == pytest.approx(math.log(s) + 300, rel=1e-12)
    assert diag.log_abs_grad_rejected.item() == pytest.approx(math.log(s) + 800, rel=1e-12)
    assert diag.log_ratio.item() == pytest.approx(500.0, rel=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_has_diagnostics_without_nan_or_overflow(name):
    batch = PreferenceBatch(
        *(
            torch.tensor(v, dtype=torch.float32)
            for v in ([-300.0, -45.0], [-800.0, -60.0], [-310.0, -50.0], [-790.0, -58.0])
        ),
        chosen_lengths=torch.tensor([120, 30]),
        rejected_lengths=torch.tensor([250, 40]),
        # shared lengths 120 and 30 tokens: their share of each sum (LD-DPO); WPO log-weights per token
        policy_chosen_shared_logps=torch.tensor([-300.0, -45.0]),
        policy_rejected_shared_logps=torch.tensor([-800.0 * 120 / 250, -60.0 * 30 / 40]),
        reference_chosen_shared_logps=torch.tensor([-310.0, -50.0]),
        reference_rejected_shared_logps=torch.tensor([-790.0 * 120 / 250, -58.0 * 30 / 40]),
        chosen_wpo_logweights=torch.tensor([-2.4, -1.4]),
        rejected_wpo_logweights=torch.tensor([-3.1, -1.4]),
    )
    diag = gradient_diagnostics(bind_loss(name), batch)
    for tensor in (diag.log_abs_grad_chosen, diag.log_abs_grad_rejected):
        assert tensor.shape == (2,)
        assert not torch.isnan(tensor).any()
        assert not (tensor == math.inf).any()  # -inf is allowed: an exactly zero gradient
    assert torch.isfinite(diag.chosen_logp_grad).all() and torch.isfinite(diag.rejected_logp_grad).all()


def test_diagnostics_leave_the_model_graph_alone():
    chosen = torch.tensor([-5.0, -7.0], requires_grad=True)
    rejected = torch.tensor([-6.0, -4.0], requires_grad=True)
    batch = PreferenceBatch(
        chosen * 1.0, rejected * 1.0, torch.tensor([-5.5, -6.0]), torch.tensor([-5.0, -5.0])
    )
    diag = gradient_diagnostics(bind_loss("dpo"), batch)
    assert chosen.grad is None and rejected.grad is None
    assert not diag.chosen_logp_grad.requires_grad and not diag.log_abs_grad_chosen.requires_grad
    # each pair's gradient is its own (the per-pair loss, not the batch mean)
    single = gradient_diagnostics(bind_loss("dpo"), PreferenceBatch(*(t[:1].detach() for t in (
        batch.policy_chosen_logps, batch.policy_rejected_logps, batch.reference_chosen_logps, batch.reference_rejected_logps
    ))))  # fmt: skip
    assert diag.chosen_logp_grad[0].item() == pytest.approx(single.chosen_logp_grad.item(), rel=1e-12)


def test_diagnostics_of_an_unknown_loss_is_a_value_error():
    with pytest.raises(ValueError, match="unknown loss"):
        gradient_diagnostics(bind_loss("nope"), one_pair(-1.0, -2.0, -1.0, -2.0))


# --------------------------------------------------------------------------- issue 14: the balanced family, mixtures


@pytest.mark.parametrize(("logp_w", "logp_l", "ref_w", "ref_l"), CASES)
def test_adadpo_balances_the_probability_gradients_up_to_its_clip(logp_w, logp_l, ref_w, ref_l):
    # β_w = β·min(x1/x2, C): |∂L/∂x1| = β_w σ(-z)/x1, |∂L/∂x2| = β σ(-z)/x2, so
    # ln|g2/g1| = ln(β/β_w) + logp_w - logp_l = max(0, logp_w - logp_l - ln C)
    clip = 2.0
    diag = gradient_diagnostics(bind_loss("adadpo", {"clip": clip}), one_pair(logp_w, logp_l, ref_w, ref_l))
    assert diag.log_ratio.item() == pytest.approx(max(0.0, logp_w - logp_l - math.log(clip)), abs=1e-12)


def test_bdpo_rejected_gradient_vanishes_with_x2():
    # ∂L/∂logp_l = β σ(-z)·λx2/(λx2 + (1-λ)ref_l): the mixing factor goes to 0 as x2 -> 0
    beta, mix = 0.1, 0.5
    for logp_l in (-2.0, -20.0, -200.0):
        ref_l = -2.0
        mixed = math.log(mix * math.exp(logp_l) + (1 - mix) * math.exp(ref_l))
        z = beta * ((-1.0 + 1.5) - (mixed - ref_l))
        factor = mix * math.exp(logp_l) / (mix * math.exp(logp_l) + (1 - mix) * math.exp(ref_l))
        diag = gradient_diagnostics(bind_loss("bdpo", {"beta": beta, "mix": mix}), one_pair(-1.0, logp_l, -1.5, ref_l))
        assert diag.rejected_logp_grad.item() == pytest.approx(beta * factor / (1 + math.exp(z)), rel=1e-10)
    # in probability space: ∂L/∂x2 = β σ(-z)·λ/(λx2 + (1-λ)ref_l) <= β·λ/((1-λ)·ref_l), bounded as x2 -> 0,
    # while DPO's grows like 1/x2: at x2 = e^-200 its log|∂L/∂x2| is ~178
    assert diag.log_abs_grad_rejected.item() < math.log(beta * mix / ((1 - mix) * math.exp(-2.0)))
    assert gradient_diagnostics(bind_loss("dpo"), one_pair(-1.0, -200.0, -1.5, -2.0)).log_abs_grad_rejected.item() > 170


def test_bpo_pushes_only_the_smaller_side():
    # a = 0.5, b = -0.5 (β = 0.1): r_w = 0.05 > -α r_l = 0.015 -> only the rejected gets a gradient
    diag = gradient_diagnostics(bind_loss("bpo"), one_pair(-2.0, -3.0, -2.5, -2.5))
    assert diag.chosen_logp_grad.item() == 0 and diag.rejected_logp_grad.item() > 0
    # a = -1, b = -0.5: r_w = -0.1 < -α r_l = 0.015 -> only the chosen
    diag = gradient_diagnostics(bind_loss("bpo"), one_pair(-4.0, -3.0, -3.0, -2.5))
    assert diag.chosen_logp_grad.item() < 0 and diag.rejected_logp_grad.item() == 0


def test_mixture_diagnostics_are_the_weighted_sums_of_the_parts():
    batch = PreferenceBatch(
        *(torch.tensor(v, dtype=torch.float64) for v in ([-5.0, -9.0], [-6.0, -4.0], [-5.5, -8.0], [-5.0, -5.0])),
        chosen_lengths=torch.tensor([3.0, 4.0]),
        rejected_lengths=torch.tensor([2.0, 5.0]),
    )
    mixed = gradient_diagnostics(bind_loss("dpo:0.8,bco-pair:0.2,sft:1"), batch)
    parts = {name: gradient_diagnostics(bind_loss(name), batch) for name in ("dpo", "bco-pair", "sft")}
    for side in ("chosen_logp_grad", "rejected_logp_grad"):
        expected = 0.8 * getattr(parts["dpo"], side) + 0.2 * getattr(parts["bco-pair"], side) + getattr(parts["sft"], side)
        torch.testing.assert_close(getattr(mixed, side), expected, rtol=1e-12, atol=1e-15)


def test_ld_dpo_diagnostics_scale_the_shared_part_with_the_sequence():
    # every token's log-prob scaled alike: d(shared)/d(logp) = shared/logp, so
    # ∂L/∂logp_w = -β σ(-z)·(s + α(1 - s)), s = shared_w/logp_w (the reference is a constant)
    beta, alpha = 0.1, 0.5
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    batch = PreferenceBatch(
        t(-6.0), t(-3.0), t(-5.0), t(-3.0), t(6.0), t(2.0),
        t(-2.0), t(-3.0), t(-1.0), t(-3.0),
    )  # fmt: skip
    chosen = -2.0 + alpha * (-6.0 + 2.0) - (-1.0 + alpha * (-5.0 + 1.0))  # ã = -4 - (-3) = -1
    z = beta * (chosen - 0.0)
    share = -2.0 / -6.0
    diag = gradient_diagnostics(bind_loss("ld-dpo", {"beta": beta, "ld_alpha": alpha}), batch)
    assert diag.chosen_logp_grad.item() == pytest.approx(-beta / (1 + math.exp(z)) * (share + alpha * (1 - share)), rel=1e-10)
