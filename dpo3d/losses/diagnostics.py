"""The 3D diagnostics of any registered loss: log|∂L/∂x1| and log|∂L/∂x2|.

x1 = π(y_w|x) and x2 = π(y_l|x) are sequence probabilities, far below float
range for real responses, so the gradients are returned in log-magnitude form:
log|∂L/∂x| = log|∂L/∂logp| - logp (chain rule through x = exp(logp)).
The derivative with respect to the summed log-prob comes from autograd on the
loss itself, so every loss of the registry gets its diagnostics for free.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .registry import PreferenceBatch, get_loss


@dataclass
class GradientDiagnostics:
    """Per pair: ∂L/∂logp for each side (signed) and log|∂L/∂x| for each side."""

    chosen_logp_grad: torch.Tensor
    rejected_logp_grad: torch.Tensor
    log_abs_grad_chosen: torch.Tensor  # log|∂L/∂x1|; -inf where the gradient is exactly zero
    log_abs_grad_rejected: torch.Tensor  # log|∂L/∂x2|

    @property
    def log_ratio(self) -> torch.Tensor:
        """log(|∂L/∂x2| / |∂L/∂x1|): how much harder the rejected side is pushed."""
        return self.log_abs_grad_rejected - self.log_abs_grad_chosen


def gradient_diagnostics(name: str, batch: PreferenceBatch, **hyperparameters: float | None) -> GradientDiagnostics:
    """Gradients of the *per-pair* loss of ``name`` with respect to each pair's x1 and x2.

    Computed in float64 on detached copies: it never touches the model's graph.
    """
    spec = get_loss(name)

    def leaf(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().to(torch.float64)

    chosen = leaf(batch.policy_chosen_logps).requires_grad_(True)
    rejected = leaf(batch.policy_rejected_logps).requires_grad_(True)
    probe = replace(
        batch,
        policy_chosen_logps=chosen,
        policy_rejected_logps=rejected,
        reference_chosen_logps=leaf(batch.reference_chosen_logps),
        reference_rejected_logps=leaf(batch.reference_rejected_logps),
        chosen_lengths=leaf(batch.chosen_lengths),
        rejected_lengths=leaf(batch.rejected_lengths),
    )
    with torch.enable_grad():
        losses = spec(probe, **hyperparameters).losses
        chosen_grad, rejected_grad = torch.autograd.grad(losses.sum(), [chosen, rejected], allow_unused=True)
    chosen_grad = torch.zeros_like(chosen) if chosen_grad is None else chosen_grad
    rejected_grad = torch.zeros_like(rejected) if rejected_grad is None else rejected_grad
    return GradientDiagnostics(
        chosen_logp_grad=chosen_grad.detach(),
        rejected_logp_grad=rejected_grad.detach(),
        log_abs_grad_chosen=(chosen_grad.abs().log() - chosen).detach(),
        log_abs_grad_rejected=(rejected_grad.abs().log() - rejected).detach(),
    )
