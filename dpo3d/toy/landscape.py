"""The loss over the plane (x1, x2) with its gradient field (Figure 1 of Feng et al. 2024).

x1 = π(y_w|x) and x2 = π(y_l|x) are two probabilities of one distribution, so
only x1 + x2 < 1 is reachable; the rest of the square is greyed out. Both
reference probabilities are set to the same value (0.1, uniform over the toy's
10 responses), so for DPO only x1/x2 matters. Losses and gradients come from the
registry (a bound loss and ``gradient_diagnostics``) on a grid of pairs; a
loss that pools over its batch (bco) sees the whole grid as one batch.

Arrows show the direction gradient descent moves (x1, x2) in; their colour is
the gradient's magnitude. Under DPO they point almost straight down: the
|∂L/∂x2| : |∂L/∂x1| ratio is x1/x2 (Corollary 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..losses import BoundLoss, PreferenceBatch, bind_losses, gradient_diagnostics

REFERENCE_PROBABILITY = 0.1


@dataclass
class Landscape:
    x1: torch.Tensor  # (n, n) grid
    x2: torch.Tensor
    loss: torch.Tensor  # nan where x1 + x2 >= 1
    grad_x1: torch.Tensor  # ∂L/∂x1, signed
    grad_x2: torch.Tensor


def landscape(
    loss: BoundLoss,
    points: int = 60,
    reference: float = REFERENCE_PROBABILITY,
    low: float = 0.01,
) -> Landscape:
    """Loss and gradient of ``loss`` on a ``points`` × ``points`` grid over [low, 1 - low]²."""
    axis = torch.linspace(low, 1 - low, points, dtype=torch.float64)
    x2, x1 = torch.meshgrid(axis, axis, indexing="ij")  # rows follow x2, columns x1
    feasible = (x1 + x2) < 1
    chosen, rejected = x1[feasible], x2[feasible]
    ref = torch.full_like(chosen, math.log(reference))
    batch = PreferenceBatch(chosen.log(), rejected.log(), ref, ref)
    losses = loss(batch).losses
    diagnostics = gradient_diagnostics(loss, batch)
    grad_x1 = diagnostics.chosen_logp_grad.sign() * diagnostics.log_abs_grad_chosen.exp()
    grad_x2 = diagnostics.rejected_logp_grad.sign() * diagnostics.log_abs_grad_rejected.exp()

    def on_grid(values: torch.Tensor) -> torch.Tensor:
        grid = torch.full_like(x1, math.nan)
        grid[feasible] = values.detach().to(torch.float64)
        return grid

    return Landscape(x1, x2, on_grid(losses), on_grid(grad_x1), on_grid(grad_x2))


def plot_landscapes(
    names: Sequence[str],
    path: str | Path,
    hyperparameters: Mapping[str, float | None] | None = None,
) -> Path:
    """One panel per loss, side by side: labelled loss contours, descent directions coloured by log10|∇L|.

    A loss that reads more than the two probabilities (wpo's per-token weights, ld-dpo's shared length) has no
    single landscape over (x1, x2): it is left out, and the title says so."""
    options = dict(hyperparameters or {})
    bound = bind_losses(names, options, may_go_unused=set(options))  # the run's options, where a loss takes them
    drawn = [loss for loss in bound if not loss.inputs]
    left_out = [loss.name for loss in bound if loss not in drawn]
    fig = Figure(figsize=(4.4 * max(len(drawn), 1), 5.2), layout="constrained")
    axes = fig.subplots(1, max(len(drawn), 1), squeeze=False)[0]
    if not drawn:
        axes[0].set_axis_off()
    for ax, loss in zip(axes, drawn, strict=False):
        name = loss.name
        field = landscape(loss)
        arrow = landscape(loss, points=15, low=0.04)  # arrows stay inside the axes
        loss = field.loss.numpy()
        finite_loss = loss[np.isfinite(loss)]
        # the loss runs to infinity at the edges: contour the bulk of it
        low, high = (np.percentile(finite_loss, [1, 95]) if finite_loss.size else (0.0, 1.0))
        levels = np.linspace(low, max(high, low + 1e-9), 10)
        ax.contourf(field.x1.numpy(), field.x2.numpy(), np.clip(loss, None, high), levels=levels, cmap="Blues_r", alpha=0.55)
        lines = ax.contour(field.x1.numpy(), field.x2.numpy(), loss, levels=levels[1:-1:2], colors="0.25", linewidths=0.7)
        ax.clabel(lines, fontsize=7, fmt="%.2g")
        dx, dy = -arrow.grad_x1.numpy(), -arrow.grad_x2.numpy()
        length = np.hypot(dx, dy)
        with np.errstate(invalid="ignore", divide="ignore"):
            ux, uy, magnitude = dx / length, dy / length, np.log10(length)
        shown = np.isfinite(magnitude)
        norm = Normalize(float(magnitude[shown].min()), float(magnitude[shown].max())) if shown.any() else Normalize(0, 1)
        quiver = ax.quiver(
            arrow.x1.numpy()[shown], arrow.x2.numpy()[shown], ux[shown], uy[shown], magnitude[shown],
            cmap="autumn_r", norm=norm, angles="xy", scale_units="xy", scale=16, width=0.006,
        )
        fig.colorbar(quiver, ax=ax, orientation="horizontal", shrink=0.85, pad=0.02, label="log10 |∇L| (arrow colour)")
        ax.fill_between([0, 1], [1, 0], [1, 1], color="0.88", zorder=0.5)
        ax.text(0.62, 0.62, "x1 + x2 > 1\nunreachable", ha="center", va="center", fontsize=8, color="0.4")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="x1 = π(chosen)", ylabel="x2 = π(rejected)", aspect="equal")
        ax.set_title(name, fontsize=11)
    fig.suptitle(
        f"Loss contours over (x1, x2) and descent directions (reference π = {REFERENCE_PROBABILITY} for both);\n"
        "an arrow pointing down means |∂L/∂x2| ≫ |∂L/∂x1|"
        + (f"\nnot drawn: {', '.join(left_out)} (they read more than x1 and x2)" if left_out else ""),
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    return Path(path)
