"""The loss registry: lookup, hyper-parameter selection, documentation, shapes, gradients,
and identities between losses that must hold for any input (issue 2, item 2).

The hand-computed values of every loss are in test_losses_by_hand.py.
The property tests draw many random pairs from a seeded generator (hypothesis is
not a dependency of the project); each seed is a batch of 256 random pairs.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from dpo3d.losses import LOSSES, LossSpec, PreferenceBatch, compute_loss, get_loss, register

ALL = sorted(LOSSES)
SEEDS = range(5)


def random_batch(seed: int, size: int = 256, dtype=torch.float64, references: bool = True) -> PreferenceBatch:
    """Sequence log-probs of responses 1..60 tokens long, roughly -0.05..-3 nats a token."""
    g = torch.Generator().manual_seed(seed)
    chosen_len = torch.randint(1, 61, (size,), generator=g)
    rejected_len = torch.randint(1, 61, (size,), generator=g)

    def logps(lengths):
        return -(torch.rand(size, generator=g, dtype=torch.float64) * 3 + 0.05) * lengths

    policy_chosen, policy_rejected = logps(chosen_len), logps(rejected_len)
    reference_chosen, reference_rejected = logps(chosen_len), logps(rejected_len)
    # the token-level extras (LD-DPO, WPO): the shared prefix holds its share of the sum,
    # WPO's log-weights lie a little above the per-token log-probs
    shared = torch.minimum(chosen_len, rejected_len)

    def part(total, lengths):
        return (total * shared / lengths).to(dtype)

    batch = PreferenceBatch(
        policy_chosen_logps=policy_chosen.to(dtype),
        policy_rejected_logps=policy_rejected.to(dtype),
        reference_chosen_logps=reference_chosen.to(dtype) if references else None,
        reference_rejected_logps=reference_rejected.to(dtype) if references else None,
        chosen_lengths=chosen_len,
        rejected_lengths=rejected_len,
        policy_chosen_shared_logps=part(policy_chosen, chosen_len),
        policy_rejected_shared_logps=part(policy_rejected, rejected_len),
        reference_chosen_shared_logps=part(reference_chosen, chosen_len) if references else None,
        reference_rejected_shared_logps=part(reference_rejected, rejected_len) if references else None,
        chosen_wpo_logweights=(policy_chosen / chosen_len + 0.3 * torch.rand(size, generator=g, dtype=torch.float64)).to(dtype),
        rejected_wpo_logweights=(policy_rejected / rejected_len + 0.3 * torch.rand(size, generator=g, dtype=torch.float64)).to(dtype),
    )
    return batch


# --------------------------------------------------------------------------- the registry


def test_the_expected_losses_are_registered():
    expected = {
        "dpo", "ipo", "slic", "flex", "dpo-sft", "cdpo", "robust", "simpo", "dpop",
        "hinge", "nca", "apo-zero", "apo-down", "sppo-hard", "exo", "bco",
        # issue 14: the balanced-gradient family, TRL's remaining loss types, ORPO/CPO/R-DPO, SFT
        "adadpo", "bpo", "bdpo", "aot", "aot-unpaired", "discopop", "sigmoid-norm",
        "fdpo-forward-kl", "fdpo-js", "fdpo-alpha", "ld-dpo", "wpo", "bco-pair",
        "orpo", "cpo", "rdpo", "sft",
        # issue 27: the mitigation losses
        "cal-dpo", "simper", "beta-dpo", "epsilon-dpo", "kto",
    }  # fmt: skip
    assert expected <= set(LOSSES)
    assert len(LOSSES) >= 28


def test_unknown_loss_is_a_value_error_listing_the_choices():
    with pytest.raises(ValueError) as info:
        get_loss("dpoo")
    message = str(info.value)
    assert "dpoo" in message
    for name in LOSSES:
        assert name in message
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        compute_loss("nope", random_batch(0, 2))


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):

        @register("dpo", log_probs="sum", source="duplicate")
        def again(batch, *, beta: float = 0.1):  # pragma: no cover - never called
            raise AssertionError

    assert LOSSES["dpo"].fn.__name__ == "dpo"


def test_select_keeps_only_the_hyperparameters_a_loss_takes():
    dpo = get_loss("dpo")
    hyper = {"beta": 0.2, "gamma": 5.0, "delta": 3.0, "label_smoothing": 0.3, "sft_weight": None}
    assert dpo.select(hyper) == {"beta": 0.2}
    # None means "use the default"
    assert dpo.select({"beta": None}) == {}
    assert get_loss("simpo").select(hyper) == {"beta": 0.2, "gamma": 5.0}
    assert get_loss("slic").select(hyper) == {"delta": 3.0}


def test_hyperparameters_a_loss_does_not_take_are_ignored():
    batch = random_batch(1, 8)
    plain = compute_loss("dpo", batch, beta=0.2)
    noisy = compute_loss("dpo", batch, beta=0.2, gamma=100.0, delta=-4.0, sft_weight=None, beta_rejected=9.0)
    torch.testing.assert_close(noisy.losses, plain.losses)
    # ... while those it takes are used, and None falls back to the default
    assert not torch.allclose(compute_loss("dpo", batch, beta=0.5).losses, plain.losses)
    torch.testing.assert_close(
        compute_loss("dpo", batch, beta=None).losses, compute_loss("dpo", batch).losses
    )


@pytest.mark.parametrize("name", ALL)
def test_every_loss_documents_formula_source_and_log_probs(name):
    spec: LossSpec = LOSSES[name]
    assert spec.name == name
    assert spec.log_probs in {"sum", "mean"}
    # the summary line is the formula
    assert spec.summary, f"{name} has no docstring"
    assert re.search(r"σ|max\(|²|log", spec.summary), (
        f"{name}: summary does not look like a formula: {spec.summary!r}"
    )
    # the docstring says how it reads log-probs, consistently with log_probs
    doc = (spec.fn.__doc__ or "").lower()
    assert ("summed" if spec.log_probs == "sum" else "length-averaged") in doc
    # a source with an author and a year
    assert re.search(r"[A-Z][a-z]+.*\b(19|20)\d\d\b", spec.source), spec.source
    # hyper-parameters are keyword-only with a default
    assert all(isinstance(value, (int, float)) for value in spec.defaults.values()), spec.defaults


@pytest.mark.parametrize("name", ALL)
def test_needs_reference_is_truthful(name):
    spec = LOSSES[name]
    batch = random_batch(2, 4, references=False)
    if spec.needs_reference:
        with pytest.raises(ValueError, match="reference"):
            spec(batch)
    else:
        assert torch.isfinite(spec(batch).losses).all()


# --------------------------------------------------------------------------- shapes, dtypes, gradients


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_loss_returns_per_pair_tensors(name, dtype):
    batch = random_batch(3, 7, dtype=dtype)
    out = compute_loss(name, batch)
    for tensor in (out.losses, out.chosen_rewards, out.rejected_rewards, out.margins):
        assert tensor.shape == (7,)
        assert tensor.dtype == dtype
        assert torch.isfinite(tensor).all()
    assert out.loss.shape == ()
    torch.testing.assert_close(out.loss, out.losses.mean())


@pytest.mark.parametrize("name", ALL)
def test_every_loss_is_differentiable(name):
    batch = random_batch(4, 16)
    chosen = batch.policy_chosen_logps.clone().requires_grad_(True)
    rejected = batch.policy_rejected_logps.clone().requires_grad_(True)
    from dataclasses import replace

    probe = replace(batch, policy_chosen_logps=chosen, policy_rejected_logps=rejected)
    compute_loss(name, probe).loss.backward()
    if name == "sft":  # the NLL of the chosen alone: the rejected is not in the graph
        assert rejected.grad is None
        rejected.grad = torch.zeros_like(rejected)
    assert chosen.grad is not None and rejected.grad is not None
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    # every loss moves the policy: some gradient is non-zero
    assert chosen.grad.abs().sum() + rejected.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [name for name in ALL if name not in ("bco", "adadpo", "beta-dpo", "kto")])
def test_autograd_matches_finite_differences(name):
    # away from the kinks of hinge/slic/dpop/bpo (random inputs hit them with probability 0).
    # bco, adadpo, beta-dpo and kto are left out on purpose: bco's shift δ (the batch's mean reward),
    # adadpo's coefficient β_w, beta-dpo's batch β and kto's reference point z0 are detached, so
    # autograd treats them as constants while finite differences move them (test_losses_mitigation.py
    # checks beta-dpo and kto's gradients by hand, and by gradcheck where the statistic is constant).
    # (WPO's weights are inputs of their own, so it is in.)
    batch = random_batch(5, 6)
    from dataclasses import fields, replace

    if name in ("fdpo-forward-kl", "fdpo-alpha"):
        # their scores are exponentials of the log-ratio: at the ±150-nat ratios of the random
        # batch finite differences lose the curvature (and the clamp at 80 nats is a kink), so
        # the check runs on log-probs scaled down to a few nats
        batch = replace(batch, **{
            f.name: getattr(batch, f.name) * 0.05 for f in fields(batch)
            if "lengths" not in f.name and getattr(batch, f.name) is not None
        })  # fmt: skip

    def fn(chosen, rejected):
        return compute_loss(name, replace(batch, policy_chosen_logps=chosen, policy_rejected_logps=rejected)).losses

    inputs = (
        batch.policy_chosen_logps.clone().requires_grad_(True),
        batch.policy_rejected_logps.clone().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("name", ALL)
def test_gradient_pushes_the_rejected_down_and_the_chosen_up_when_the_pair_is_wrong(name):
    # a pair the model gets badly wrong: chosen far below, rejected far above the reference
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    chosen, rejected = t(-30.0).requires_grad_(True), t(-10.0).requires_grad_(True)
    # equal lengths: the shared length is the whole response (LD-DPO); WPO weights e^-1 each
    batch = PreferenceBatch(
        chosen, rejected, t(-20.0), t(-20.0), t(10.0), t(10.0),
        chosen, rejected, t(-20.0), t(-20.0), t(-1.0), t(-1.0),
    )  # fmt: skip
    compute_loss(name, batch).loss.backward()
    # gradient descent moves each log-prob by -grad
    if name in ("bpo", "sft"):
        rejected.grad = torch.zeros_like(rejected) if rejected.grad is None else rejected.grad
        # bpo: min(r_w, -α r_l) = r_w = -1 here (-α r_l = -0.3), so only the chosen is pushed;
        # sft never touches the rejected
        assert rejected.grad.item() == 0
    else:
        assert rejected.grad.item() > 0
    if name == "apo-down":
        # APO-down lowers both (the model is assumed better than the chosen): σ(r_w) pulls the chosen down
        assert chosen.grad.item() > 0
    else:
        assert chosen.grad.item() < 0


# --------------------------------------------------------------------------- identities (property tests)


@pytest.mark.parametrize("seed", SEEDS)
def test_dpo_is_minus_log_sigmoid_of_the_reward_margin(seed):
    batch = random_batch(seed)
    a, b = batch.logratios()
    out = compute_loss("dpo", batch, beta=0.3)
    torch.testing.assert_close(out.chosen_rewards, 0.3 * a)
    torch.testing.assert_close(out.rejected_rewards, 0.3 * b)
    torch.testing.assert_close(out.losses, -F.logsigmoid(out.margins))
    # -log σ(h) + log σ(-h) = -h: swapping chosen and rejected changes the loss by exactly h
    swapped = PreferenceBatch(
        batch.policy_rejected_logps, batch.policy_chosen_logps,
        batch.reference_rejected_logps, batch.reference_chosen_logps,
    )  # fmt: skip
    torch.testing.assert_close(compute_loss("dpo", swapped, beta=0.3).losses - out.losses, out.margins)


@pytest.mark.parametrize("seed", SEEDS)
def test_dpo_depends_only_on_the_log_ratios(seed):
    # shifting policy and reference of a response by the same amount changes nothing
    batch = random_batch(seed)
    g = torch.Generator().manual_seed(100 + seed)
    sw, sl = (torch.randn(256, generator=g, dtype=torch.float64) * 50 for _ in range(2))
    shifted = PreferenceBatch(
        batch.policy_chosen_logps + sw, batch.policy_rejected_logps + sl,
        batch.reference_chosen_logps + sw, batch.reference_rejected_logps + sl,
    )  # fmt: skip
    torch.testing.assert_close(compute_loss("dpo", shifted).losses, compute_loss("dpo", batch).losses)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        ("flex", {"beta_chosen": 0.2, "beta_rejected": 0.2}),  # β_w = β_l = β
        ("dpo-sft", {"beta": 0.2, "sft_weight": 0.0}),  # α = 0
        ("cdpo", {"beta": 0.2, "label_smoothing": 0.0}),  # ε = 0
        ("robust", {"beta": 0.2, "label_smoothing": 0.0}),  # ε = 0
        ("dpop", {"beta": 0.2, "dpop_lambda": 0.0}),  # λ = 0
    ],
)
def test_variants_reduce_to_dpo(seed, name, hyper):
    batch = random_batch(seed)
    dpo = compute_loss("dpo", batch, beta=0.2)
    out = compute_loss(name, batch, **hyper)
    torch.testing.assert_close(out.losses, dpo.losses)
    torch.testing.assert_close(out.chosen_rewards, dpo.chosen_rewards)
    torch.testing.assert_close(out.rejected_rewards, dpo.rejected_rewards)


@pytest.mark.parametrize("seed", SEEDS)
def test_dpop_equals_dpo_while_the_chosen_stays_above_the_reference(seed):
    batch = random_batch(seed)
    above = PreferenceBatch(
        torch.maximum(batch.policy_chosen_logps, batch.reference_chosen_logps), batch.policy_rejected_logps,
        batch.reference_chosen_logps, batch.reference_rejected_logps,
    )  # fmt: skip
    torch.testing.assert_close(compute_loss("dpop", above).losses, compute_loss("dpo", above).losses)
    # ... and is never smaller than DPO
    assert (compute_loss("dpop", batch).losses >= compute_loss("dpo", batch).losses - 1e-12).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_robust_is_unbiased_for_flipped_labels(seed):
    # E over flips with probability ε of the robust loss equals the clean DPO loss (Chowdhury et al., Lemma 3.1)
    batch = random_batch(seed)
    eps = 0.2
    swapped = PreferenceBatch(
        batch.policy_rejected_logps, batch.policy_chosen_logps,
        batch.reference_rejected_logps, batch.reference_chosen_logps,
    )  # fmt: skip
    clean = compute_loss("robust", batch, label_smoothing=eps).losses
    flipped = compute_loss("robust", swapped, label_smoothing=eps).losses
    torch.testing.assert_close((1 - eps) * clean + eps * flipped, compute_loss("dpo", batch).losses)


@pytest.mark.parametrize("seed", SEEDS)
def test_cdpo_is_dpo_against_smoothed_labels(seed):
    batch = random_batch(seed)
    h = compute_loss("dpo", batch).margins
    out = compute_loss("cdpo", batch, label_smoothing=0.25)
    torch.testing.assert_close(
        out.losses, F.binary_cross_entropy_with_logits(h, torch.full_like(h, 0.75), reduction="none")
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_ipo_with_unit_lengths_is_the_summed_form(seed):
    batch = random_batch(seed)
    unit = PreferenceBatch(
        batch.policy_chosen_logps,
        batch.policy_rejected_logps,
        batch.reference_chosen_logps,
        batch.reference_rejected_logps,
    )
    a, b = unit.logratios()
    torch.testing.assert_close(compute_loss("ipo", unit, beta=0.1).losses, (a - b - 5.0) ** 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_simpo_and_ipo_read_length_averaged_log_probs(seed):
    # doubling every response's length and summed log-probs leaves per-token quantities unchanged
    batch = random_batch(seed)
    doubled = PreferenceBatch(
        batch.policy_chosen_logps * 2, batch.policy_rejected_logps * 2,
        batch.reference_chosen_logps * 2, batch.reference_rejected_logps * 2,
        batch.chosen_lengths * 2, batch.rejected_lengths * 2,
    )  # fmt: skip
    for name in ("simpo", "ipo"):
        assert LOSSES[name].log_probs == "mean"
        torch.testing.assert_close(compute_loss(name, doubled).losses, compute_loss(name, batch).losses)
    # a summed-log-prob loss does change
    assert not torch.allclose(compute_loss("dpo", doubled).losses, compute_loss("dpo", batch).losses)


@pytest.mark.parametrize("seed", SEEDS)
def test_bco_shift_is_the_detached_batch_mean(seed):
    batch = random_batch(seed)
    out = compute_loss("bco", batch)
    delta = torch.cat([out.chosen_rewards, out.rejected_rewards]).mean()
    expected = -F.logsigmoid(out.chosen_rewards - delta) - F.logsigmoid(-(out.rejected_rewards - delta))
    torch.testing.assert_close(out.losses, expected)


@pytest.mark.parametrize(("name", "bad"), [("robust", 0.5), ("robust", -0.1), ("exo", 0.0), ("exo", 0.5)])
def test_label_smoothing_out_of_range_is_refused(name, bad):
    with pytest.raises(ValueError, match="label_smoothing"):
        compute_loss(name, random_batch(0, 2), label_smoothing=bad)
