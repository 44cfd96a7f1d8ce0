"""The 3D diagnostics of any registered loss: log|∂L/∂x1| and log|∂L/∂x2|.

x1 = π(y_w|x) and x2 = π(y_l|x) are sequence probabilities, far below float
range for real responses, so the gradients are returned in log-magnitude form:
log|∂L/∂x| = log|∂L/∂logp| - logp (chain rule through x = exp(logp)).
The derivative with respect to the summed log-prob comes from autograd on the
loss itself, so every loss of the registry gets its diagnostics for free (a
mixture's are the weighted sums of its parts', by linearity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch

from .bound import BoundLoss
from .registry import PreferenceBatch


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


def gradient_diagnostics(loss: BoundLoss, batch: PreferenceBatch) -> GradientDiagnostics:
    """Gradients of the *per-pair* ``loss`` with respect to each pair's x1 and x2.

    Computed in float64 on detached copies: it never touches the model's graph.
    """
    return gradient_diagnostics_many([(loss, batch)])[0]


def _probe(batch: PreferenceBatch) -> tuple[PreferenceBatch, torch.Tensor, torch.Tensor]:
    def leaf(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().to(torch.float64)

    chosen = leaf(batch.policy_chosen_logps).requires_grad_(True)
    rejected = leaf(batch.policy_rejected_logps).requires_grad_(True)
    # every other input (reference, lengths, token-level extras) is a detached float64 constant
    rest = {f.name: leaf(getattr(batch, f.name)) for f in fields(batch)}
    rest.update(policy_chosen_logps=chosen, policy_rejected_logps=rejected)
    # a shared-length part (LD-DPO) moves with its sequence: every token's log-prob scaled alike, so
    # d(shared)/d(logp) = shared/logp; its value is unchanged
    for side, total in (("chosen", chosen), ("rejected", rejected)):
        key = f"policy_{side}_shared_logps"
        if rest[key] is not None:
            rest[key] = rest[key] * (total / total.detach())
    return replace(batch, **rest), chosen, rejected


def gradient_diagnostics_many(
    items: Sequence[tuple[BoundLoss, PreferenceBatch]],
) -> list[GradientDiagnostics]:
    """``gradient_diagnostics`` of several (bound loss, batch) at once, with one backward pass.

    The batches are independent leaves, so the gradient of the summed losses splits back into
    each item's own per-pair gradients exactly; one autograd call instead of one per item is what
    keeps the toy's every-loss sweep fast.
    """
    leaves = []
    with torch.enable_grad():
        total = None
        for loss, batch in items:
            probe, chosen, rejected = _probe(batch)
            losses = loss(probe).losses.sum()
            total = losses if total is None else total + losses
            leaves += [chosen, rejected]
        grads = torch.autograd.grad(total, leaves, allow_unused=True) if total is not None else []
    out = []
    for k in range(0, len(leaves), 2):
        chosen, rejected = leaves[k], leaves[k + 1]
        chosen_grad = torch.zeros_like(chosen) if grads[k] is None else grads[k]
        rejected_grad = torch.zeros_like(rejected) if grads[k + 1] is None else grads[k + 1]
        out.append(
            GradientDiagnostics(
                chosen_logp_grad=chosen_grad.detach(),
                rejected_logp_grad=rejected_grad.detach(),
                log_abs_grad_chosen=(chosen_grad.abs().log() - chosen).detach(),
                log_abs_grad_rejected=(rejected_grad.abs().log() - rejected).detach(),
            )
        )
    return out
