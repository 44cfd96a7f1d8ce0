"""The reward model's Bradley-Terry loss: values and gradients worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dpo3d.losses.reward import bradley_terry_rm


def test_values_by_hand():
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    out = bradley_terry_rm(chosen, rejected)
    # Δ = 2, 0, -2: -log σ(Δ) = log(1 + e^-Δ)
    expected = [math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.exp(2))]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.margins.tolist() == [2.0, 0.0, -2.0]
    assert out.loss.item() == pytest.approx(sum(expected) / 3, rel=1e-6)


def test_margin_shifts_the_target():
    out = bradley_terry_rm(torch.tensor([1.0]), torch.tensor([0.0]), margin=1.0)
    assert out.losses.item() == pytest.approx(math.log(2), rel=1e-6)  # Δ - m = 0
    with pytest.raises(ValueError):
        bradley_terry_rm(torch.tensor([1.0]), torch.tensor([0.0]), margin=-1.0)


def test_gradients_equal_and_opposite_and_match_autograd():
    chosen = torch.tensor([0.3, -2.0, 4.0], requires_grad=True)
    rejected = torch.tensor([1.0, 0.5, -3.0], requires_grad=True)
    out = bradley_terry_rm(chosen, rejected, margin=0.5)
    out.losses.sum().backward()
    assert torch.allclose(out.grad_chosen, chosen.grad)
    assert torch.allclose(out.grad_rejected, rejected.grad)
    assert torch.allclose(out.grad_chosen, -out.grad_rejected)
    # by hand for the first pair: -(1 - σ(0.3 - 1.0 - 0.5))
    assert out.grad_chosen[0].item() == pytest.approx(-(1 - 1 / (1 + math.exp(1.2))), rel=1e-6)
