"""A loss bound once: name + checked options, called on a batch; the errors come at bind time."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from dpo3d.losses import (
    BoundLoss,
    PreferenceBatch,
    bind_loss,
    bind_losses,
    compute_loss,
    gradient_diagnostics,
)


def batch() -> PreferenceBatch:
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return PreferenceBatch(t(-10.0, -4.0), t(-12.0, -3.0), t(-11.0, -5.0), t(-11.0, -5.0))


def test_a_bound_dpo_gives_the_worked_example():
    # pair 1: h = (-10 + 11) - (-12 + 11) = 2; pair 2: h = (-4 + 5) - (-3 + 5) = -1; loss = -log σ(β h)
    loss = bind_loss("dpo", {"beta": 0.2})
    out = loss(batch())
    expected = [math.log1p(math.exp(-0.2 * 2)), math.log1p(math.exp(0.2 * 1))]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert out.margins.tolist() == pytest.approx([0.4, -0.2], rel=1e-12)
    # the same numbers as the name-and-keywords call it replaces
    torch.testing.assert_close(out.losses, compute_loss("dpo", batch(), beta=0.2).losses, rtol=0, atol=0)
    assert loss.options == {"beta": 0.2} and loss.values == {"beta": 0.2}
    assert bind_loss("dpo").values == {"beta": 0.1} and bind_loss("dpo").options == {}


def test_options_as_typed_get_the_default_type_and_match_the_keyword_call():
    loss = bind_loss("flex", {"beta-rejected": "0.02"})
    assert loss.options == {"beta_rejected": 0.02} and loss.values == {"beta_chosen": 0.1, "beta_rejected": 0.02}
    torch.testing.assert_close(loss(batch()).losses, compute_loss("flex", batch(), beta_rejected=0.02).losses, rtol=0, atol=0)
    assert bind_loss("adadpo", {"use_reference": "yes", "clip": 3}).options == {"use_reference": True, "clip": 3.0}
    assert bind_loss("dpo", {"beta": None}).options == {}  # None: the default


def test_an_unknown_or_ill_typed_option_fails_at_bind_time_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"loss 'bpo' has no option 'gamma'; it takes: beta, alpha"):
        bind_loss("bpo", {"gamma": 1.0})
    with pytest.raises(ValueError, match=r"loss 'sft' has no option 'beta'; it takes: no options"):
        bind_loss("sft", {"beta": 0.1})
    with pytest.raises(ValueError, match=r"loss option use_reference='maybe': expected true or false"):
        bind_loss("adadpo", {"use_reference": "maybe"})
    with pytest.raises(ValueError, match=r"loss option beta='high': expected a number"):
        bind_loss("dpo", {"beta": "high"})
    with pytest.raises(ValueError, match=r"loss option use_reference=1.0: expected true or false"):
        bind_loss("adadpo", {"use_reference": 1.0})
    with pytest.raises(ValueError, match=r"unknown loss 'dpoo'"):
        bind_loss("dpoo")


def test_a_mixture_binds_plain_and_per_part_options():
    loss = bind_loss("dpo:0.8,bco:0.2", {"beta": 0.3, "bco.beta": 0.5})
    assert loss.name == "dpo:0.8,bco:0.2"
    expected = 0.8 * compute_loss("dpo", batch(), beta=0.3).losses + 0.2 * compute_loss("bco", batch(), beta=0.5).losses
    torch.testing.assert_close(loss(batch()).losses, expected)
    with pytest.raises(ValueError, match="has no option 'sft.beta'"):
        bind_loss("dpo:0.8,bco:0.2", {"sft.beta": 0.1})


def test_changes_make_new_bound_losses():
    dpo = bind_loss("dpo", {"beta": 0.2})
    raised = dpo.with_options(beta=0.4)
    assert raised.options == {"beta": 0.4} and dpo.options == {"beta": 0.2}  # the first is unchanged
    flex = dpo.switch("flex", beta_chosen=0.2, beta_rejected=0.1)  # flex does not take beta: it is not carried
    assert (flex.name, flex.options) == ("flex", {"beta_chosen": 0.2, "beta_rejected": 0.1})
    mixed = dpo.switch("dpo:1,sft:0.1")
    assert (mixed.name, mixed.options) == ("dpo:1,sft:0.1", {"beta": 0.2})
    with pytest.raises(ValueError, match="has no option 'alpha'"):
        dpo.with_options(alpha=1.0)
    assert bind_loss("dpo", {"beta": 0.2}) == dpo and dpo != raised


def test_a_bound_mixture_crosses_a_process_boundary():
    # spawned toy workers receive their config by pickle; a mixture's function is built per lookup
    loss = bind_loss("dpo:0.8,sft:1", {"beta": 0.3})
    again = pickle.loads(pickle.dumps(loss))
    assert isinstance(again, BoundLoss) and again == loss
    torch.testing.assert_close(again(batch()).losses, loss(batch()).losses)


def test_losses_of_a_sweep_share_options_each_taking_its_own():
    dpo, flex, sft = bind_losses(["dpo", "flex", "sft"], {"beta": 0.2, "beta_rejected": 0.02})
    assert (dpo.options, flex.options, sft.options) == ({"beta": 0.2}, {"beta_rejected": 0.02}, {})
    with pytest.raises(ValueError, match=r"loss 'dpo' has no option 'alpha'; it takes: beta; loss 'sft' has no option"):
        bind_losses(["dpo", "sft"], {"alpha": 0.5})
    # a value meant for whichever losses have it (a study's β) may go unused
    (sft,) = bind_losses(["sft"], {"beta": 0.2}, may_go_unused={"beta"})
    assert sft.options == {}


def test_diagnostics_take_the_bound_loss():
    loss = bind_loss("dpo", {"beta": 0.2})
    diag = gradient_diagnostics(loss, batch())
    # ∂L/∂logp_w = -β σ(-β h)
    h = torch.tensor([2.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(diag.chosen_logp_grad, -0.2 * torch.sigmoid(-0.2 * h))
