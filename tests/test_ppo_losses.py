"""PPO's pieces, worked by hand: KL-penalised rewards, GAE, whitening, both clipped losses."""

from __future__ import annotations

import pytest
import torch

from dpo3d.losses.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
)


def test_kl_penalty_per_token_and_score_on_the_last_real_token():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = kl_penalised_rewards(logp, ref, torch.tensor([1.0, 2.0]), mask, kl_coef=0.1)
    assert kl.tolist() == [[0.5, 0.0, -1.0], [1.0, -0.5, 0.0]]
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 0.1 + 1.0], [-0.1, 0.05 + 2.0, 0.0]]))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]])
    mask = torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # δ2 = 1 - 0.4 = 0.6; δ1 = 0 + 0.9·0.4 - 0.2 = 0.16; δ0 = 0.9·0.2 - 0.5 = -0.32
    a2 = 0.6
    a1 = 0.16 + 0.45 * a2
    a0 = -0.32 + 0.45 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value_and_ignores_padding():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 9.0]])  # the padded value must not leak in
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert ret[0].tolist() == pytest.approx([6.0, 5.0, 3.0, 0.0])
    assert adv[0].tolist() == pytest.approx([5.9, 4.8, 2.7, 0.0])


def test_whitening_uses_only_masked_entries():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = masked_whiten(x, mask)
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4)  # mean 2, unbiased std 1
    assert w[0, 3] == 0
    assert masked_whiten(x, mask, shift_mean=False)[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-4)
    assert masked_mean(x, mask).item() == pytest.approx(2.0)


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    out = clipped_policy_loss(new, old, adv, torch.ones(1, 3), clip_range=0.2)
    # token 0: A>0, ρ=1.5 clipped to 1.2 -> max(-1.5, -1.2) = -1.2 (clipped counts)
    # token 1: A>0, ρ=0.5 -> max(-0.5, -0.8) = -0.5 (unclipped)
    # token 2: A<0, ρ=1.1 inside the range -> 1.1
    assert out.loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3)
    assert out.clip_fraction.item() == pytest.approx(1 / 3)
    assert out.approx_kl.item() > 0


def test_clipped_policy_gradient_vanishes_where_clipped():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.0]])).requires_grad_()
    out = clipped_policy_loss(new, old, torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), clip_range=0.2)
    out.loss.backward()
    assert new.grad[0, 0] == 0  # past 1+ε with a positive advantage: no further push
    assert new.grad[0, 1] == pytest.approx(-0.5)  # d(-A·ρ)/dlogπ = -A·ρ, averaged over 2 tokens


def test_clipped_value_loss_by_hand():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[2.0, 1.0]])
    out = clipped_value_loss(new, old, returns, torch.ones(1, 2), clip_range=0.2)
    # token 0: unclipped (1-2)² = 1, clipped (0.2-2)² = 3.24 -> 3.24; token 1: inside, (0.1-1)² = 0.81
    assert out.loss.item() == pytest.approx(0.5 * (3.24 + 0.81) / 2)
    assert out.clip_fraction.item() == pytest.approx(0.5)
