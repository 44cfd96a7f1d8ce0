"""Conventions a reader of the f-DPO, AdaDPO and WPO papers would trip on, pinned by hand-worked values
and by what `dpo3d train-dpo --list-losses` says about them.

- fdpo-alpha takes TRL's α, which is 1 - the f-DPO paper's α (they agree only at α = 0.5).
- wpo clamps its pair weight at 1, as the WPO authors' code does (TRL 1.16 no longer clamps).
- fdpo-forward-kl / fdpo-alpha clamp the exponent of their score at 80 nats: the float32 / bfloat16
  overflow of exp is measured here, and the loss and its gradient are checked on both sides of 80.
- adadpo: the paper's per-token form and its clipping bound are not in the text at hand; the listing
  says so instead of presenting dpo3d's construction as the paper's.

Expected values are computed with ``math`` from the arithmetic in the comments.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from rich.text import Text

from dpo3d.losses import LOSSES, PreferenceBatch, compute_loss
from dpo3d_cli.loss_listing import loss_lines

from .test_losses_by_hand import check, hand_batch, log_sigmoid, values

# --------------------------------------------------------------------------- f-DPO α convention


def test_fdpo_alpha_is_trls_alpha_not_the_papers_at_alpha_0_3():
    # dpo3d (= TRL 1.16): s(u) = (u^(α-1) - 1)/(α-1);  the f-DPO paper: f'(u) = (1 - u^(-α))/α.
    # α = 0.3 in dpo3d: s(u) = (1 - u^-0.7)/0.7 = (1 - e^(-0.7a))/0.7, with a the log-ratio.
    # hand_batch: pair A a = 0.5, b = -0.5;  pair B a = -1, b = 0.  β = 0.1.
    # A: s_w - s_l = (e^0.35 - e^-0.35)/0.7 = 2·sinh(0.35)/0.7 = 2·0.3571898/0.7 ≈ 1.0205421
    # B: s_w = (1 - e^0.7)/0.7 = (1 - 2.0137527)/0.7 ≈ -1.4482182, s_l = 0
    # losses: A -log σ(0.10205421) ≈ 0.6434214;  B -log σ(-0.14482182) ≈ 0.7681775
    s = lambda a: (1 - math.exp(-0.7 * a)) / 0.7  # noqa: E731
    assert s(0.5) - s(-0.5) == pytest.approx(1.0205421, abs=1e-7)
    assert s(-1) == pytest.approx(-1.4482182, abs=1e-7)
    losses = [-log_sigmoid(0.1 * (s(0.5) - s(-0.5))), -log_sigmoid(0.1 * s(-1))]
    assert losses == pytest.approx([0.6434214, 0.7681775], abs=1e-7)
    batch = hand_batch()
    check("fdpo-alpha", batch, losses, [0.1 * s(0.5), 0.1 * s(-1)], [0.1 * s(-0.5), 0.0], beta=0.1, alpha=0.3)

    # the paper's convention at α = 0.3 would be f'(u) = (1 - u^-0.3)/0.3: A 2·sinh(0.15)/0.3 ≈ 1.0037542,
    # B (1 - e^0.3)/0.3 ≈ -1.1661960, losses ≈ 0.6442183 and 0.7531560 (0.0008 and 0.0150 away from
    # dpo3d's): this test fails if dpo3d took the paper's α
    paper = lambda a, alpha: (1 - math.exp(-alpha * a)) / alpha  # noqa: E731
    paper_losses = [-log_sigmoid(0.1 * (paper(0.5, 0.3) - paper(-0.5, 0.3))), -log_sigmoid(0.1 * paper(-1, 0.3))]
    ours = compute_loss("fdpo-alpha", batch, beta=0.1, alpha=0.3).losses.tolist()
    assert abs(ours[0] - paper_losses[0]) > 4e-4 and abs(ours[1] - paper_losses[1]) > 6e-3
    # ... and it is the paper's α = 1 - 0.3 = 0.7
    paper_07 = [-log_sigmoid(0.1 * (paper(0.5, 0.7) - paper(-0.5, 0.7))), -log_sigmoid(0.1 * paper(-1, 0.7))]
    assert ours == pytest.approx(paper_07, rel=1e-12)


def test_fdpo_alpha_limits_in_dpo3ds_convention():
    # α -> 0 is the forward KL (s = 1 - 1/u), α -> 1 the reverse KL (DPO): the paper has them the other way round
    batch = hand_batch()
    forward = compute_loss("fdpo-forward-kl", batch).losses
    torch.testing.assert_close(compute_loss("fdpo-alpha", batch, alpha=0.0).losses, forward, rtol=1e-12, atol=0)
    torch.testing.assert_close(compute_loss("fdpo-alpha", batch, alpha=1.0).losses, compute_loss("dpo", batch).losses)


# --------------------------------------------------------------------------- WPO weight clamp


def test_wpo_weight_is_clamped_at_one_as_the_authors_code_does():
    # One-token responses from a distribution with two tokens at 0.3 and 40 tokens at 0.01:
    # Σ_v π(v)² = 2·0.09 + 40·0.0001 = 0.184; the chosen and the rejected are the two 0.3 tokens, so each
    # log-weight is log(0.3/0.184) ≈ 0.4888467 and the pair weight e^0.9776934 ≈ 2.6583 > 1.
    probs = torch.tensor([0.3, 0.3] + [0.01] * 40, dtype=torch.float64)
    log_weight = (probs[0].log() - (probs**2).sum().log()).item()
    assert log_weight == pytest.approx(math.log(0.3 / 0.184), rel=1e-12)
    assert math.exp(2 * log_weight) == pytest.approx(2.6583, abs=1e-4)
    batch = dataclasses.replace(
        hand_batch(), chosen_wpo_logweights=values(log_weight, -0.5), rejected_wpo_logweights=values(log_weight, -1.15)
    )
    # A: weight min(2.6583, 1) = 1, so A's loss is DPO's -log σ(0.1);  B: e^-1.65 ≈ 0.192050 < 1, unchanged
    dpo = [-log_sigmoid(0.1), -log_sigmoid(-0.1)]
    check("wpo", batch, [dpo[0], math.exp(-1.65) * dpo[1]], [0.05, -0.1], [-0.05, 0.0], beta=0.1)
    # max_weight = inf: TRL 1.16's unclamped weight (it dropped the clamp that TRL up to 0.28 had)
    check("wpo", batch, [math.exp(2 * log_weight) * dpo[0], math.exp(-1.65) * dpo[1]], [0.05, -0.1], [-0.05, 0.0],
          beta=0.1, max_weight=math.inf)  # fmt: skip
    # the clamp is on the weight, which carries no gradient: the clamped pair's gradient is DPO's
    chosen = batch.policy_chosen_logps.clone().requires_grad_(True)
    compute_loss("wpo", dataclasses.replace(batch, policy_chosen_logps=chosen)).losses[0].backward()
    assert chosen.grad[0].item() == pytest.approx(-0.1 * (1 - 1 / (1 + math.exp(-0.1))), rel=1e-12)
    with pytest.raises(ValueError, match="max_weight"):
        compute_loss("wpo", batch, max_weight=0.0)


# --------------------------------------------------------------------------- the 80-nat exponent clamp


@pytest.mark.parametrize(("dtype", "threshold"), [(torch.float32, 88.72284), (torch.bfloat16, 88.72)])
def test_exp_overflows_above_88_7_nats_in_float32_and_bfloat16_and_80_is_below(dtype, threshold):
    # measured: the largest x with a finite exp(x) in the dtype
    assert math.log(torch.finfo(dtype).max) == pytest.approx(threshold, abs=5e-3)
    assert torch.isfinite(torch.exp(torch.tensor(88.0, dtype=dtype)))
    assert torch.isinf(torch.exp(torch.tensor(89.0, dtype=dtype)))
    assert torch.isfinite(torch.exp(torch.tensor(80.0, dtype=dtype)))
    # 80 leaves e^8.7 ≈ 6000x of headroom for β·e^80 and the sums of the backward pass
    assert math.log(torch.finfo(dtype).max) - 80 > 8.7


def _softplus_of_minus(z: float) -> float:
    """-log σ(z) = log(1 + e^-z), without overflow for z far below 0."""
    return -z + math.log1p(math.exp(z)) if z < 0 else math.log1p(math.exp(-z))


def _one_pair(chosen: float, rejected: float, dtype=torch.float32) -> PreferenceBatch:
    t = lambda v: torch.tensor([v], dtype=dtype)  # noqa: E731
    return PreferenceBatch(t(chosen), t(rejected), t(0.0), t(0.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_kl_stays_finite_when_the_rejected_falls_past_float_range(dtype):
    # DPO-style training pushes the rejected 100+ nats below its reference. The forward-KL score of the
    # rejected is 1 - e^(-b): at b = -147, e^147 overflows (inf) and, unclamped, the reward is -inf and
    # the gradient σ(-z)·β·e^(-b) = 0·inf = NaN.
    b = torch.tensor([-147.0], dtype=dtype, requires_grad=True)
    unclamped = -torch.nn.functional.logsigmoid(0.1 * ((1 - torch.exp(torch.zeros(1, dtype=dtype))) - (1 - torch.exp(-b))))
    unclamped.sum().backward()
    assert torch.isnan(b.grad).all()
    # dpo3d: the loss is 0, the rewards finite and the gradient 0, which is the exact gradient to any
    # precision (σ(-z) with z = 0.1·e^80 ≈ 5.5e33 is 0; the true σ(-z)·β·e^147 is below e^-10^33)
    for name in ("fdpo-forward-kl", "fdpo-alpha"):
        batch = _one_pair(0.0, -147.0, dtype)
        rejected = batch.policy_rejected_logps.clone().requires_grad_(True)
        out = compute_loss(name, dataclasses.replace(batch, policy_rejected_logps=rejected), alpha=0.0)
        out.loss.backward()
        assert out.losses.item() == 0.0
        assert torch.isfinite(out.rejected_rewards).all() and torch.isfinite(out.chosen_rewards).all()
        assert rejected.grad.item() == 0.0


def test_forward_kl_gradient_is_exact_below_the_clamp_and_flat_beyond():
    # a chosen a nats below its reference, rejected at its reference: z = β(1 - e^-a), loss -log σ(z),
    # ∂loss/∂a = -σ(-z)·β·e^(-a). At a = -79.5 that is -0.1·e^79.5 ≈ -3.33e33 (σ(-z) = 1): finite in float32.
    for a, expected_grad in [(-79.5, -0.1 * math.exp(79.5)), (-40.0, -0.1 * math.exp(40.0)), (-2.0, None)]:
        z = 0.1 * (1 - math.exp(-a))
        exact_grad = -(1 / (1 + math.exp(z))) * 0.1 * math.exp(-a)
        if expected_grad is not None:
            assert exact_grad == pytest.approx(expected_grad, rel=1e-12)
        batch = _one_pair(a, 0.0)
        chosen = batch.policy_chosen_logps.clone().requires_grad_(True)
        out = compute_loss("fdpo-forward-kl", dataclasses.replace(batch, policy_chosen_logps=chosen))
        out.loss.backward()
        assert out.losses.item() == pytest.approx(_softplus_of_minus(z), rel=1e-6)
        assert chosen.grad.item() == pytest.approx(exact_grad, rel=1e-5)
    # past 80 nats the score is flat: the loss stays at its value at the clamp, β·(e^80 - 1) ≈ 5.54e33,
    # finite, and the chosen gets no gradient from it (the exact one, ≥ 0.1·e^80, is what a run that
    # got here has already diverged on)
    at_clamp = 0.1 * (math.exp(80.0) - 1)
    for a in (-80.5, -200.0):
        batch = _one_pair(a, 0.0)
        chosen = batch.policy_chosen_logps.clone().requires_grad_(True)
        out = compute_loss("fdpo-forward-kl", dataclasses.replace(batch, policy_chosen_logps=chosen))
        out.loss.backward()
        assert out.losses.item() == pytest.approx(at_clamp, rel=1e-6)
        assert chosen.grad.item() == 0.0


# --------------------------------------------------------------------------- what --list-losses says


def _block(name: str) -> str:
    """The --list-losses lines of one loss, markup removed, whitespace collapsed."""
    plain = [Text.from_markup(line).plain for line in loss_lines()]
    start = next(i for i, line in enumerate(plain) if line.startswith(f"{name}  ("))
    end = next((i for i in range(start + 1, len(plain)) if plain[i] and not plain[i].startswith(" ")), len(plain))
    return " ".join(" ".join(plain[start:end]).split())


def test_listing_says_which_alpha_fdpo_alpha_takes():
    block = _block("fdpo-alpha")
    assert "TRL's α" in block and "1 - α of the f-DPO paper" in block
    assert "(1 - u^(-α))/α" in block  # the paper's form, so a reader can tell them apart
    assert "same at α = 0.5" in block


def test_listing_says_what_adadpo_takes_from_its_paper_and_what_not():
    block = _block("adadpo")
    assert "per-token form and its clipping bound are not in any text we could read" in block
    assert "abstract" in block and "2605.28440" in block
    assert "dpo3d's own" in block


def test_listing_says_how_wpo_and_forward_kl_are_clamped():
    wpo = _block("wpo")
    assert "max_weight=1.0" in wpo and "authors' code" in wpo and "TRL 1.16 does not clamp" in wpo
    forward = _block("fdpo-forward-kl")
    assert "80 nats" in forward and "88.7" in forward


def test_every_note_is_listed():
    text = " ".join(Text.from_markup(line).plain for line in loss_lines())
    text = " ".join(text.split())
    for spec in LOSSES.values():
        if spec.note:
            assert " ".join(spec.note.split()) in text, spec.name
