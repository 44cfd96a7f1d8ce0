"""The toy's figures (PNG, Agg, no pyplot state): the paper's Figures 2 and 3, gradients, sweep grid.

Colours are fixed across figures. Each prompt's mass is drawn in its four shares
(mass.py; they sum to 1): its own chosen green, the rejected 5–8 orange, the other
prompts' chosen grey dashed (in the data: not dispersion) and the unseen 9–10 purple
(the only share whose gain is dispersion); the rejected of the pair, x2, is a thin
orange dotted line. With --guard, each guard
action is a vertical magenta line, and the step kept (--keep-best, or a guard's
stop) a black dotted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .indicators import Curves, curves
from .landscape import plot_landscapes
from .train import ToyResult

COLOURS = {"chosen": "#1b9e77", "rejected": "#d95f02", "unseen": "#7570b3", "other chosen": "#555555", "guard": "#e7298a"}
#: the curves of a likelihood panel: (colour key, label, Curves attribute, line style, width)
SERIES = (
    ("chosen", "own chosen π(i|i)", "chosen", "-", 1.6),
    ("rejected", "rejected 5–8 (all four)", "rejected_mass", "-", 1.6),
    ("other chosen", "other prompts' chosen", "other_chosen", "--", 1.6),
    ("unseen", "unseen 9–10 (a gain = dispersion)", "unseen", "-", 1.6),
    ("rejected", "rejected of the pair x2", "rejected", ":", 1.0),
)
LN10 = np.log(10)


def _runs_of(result: ToyResult, loss: str) -> list[int]:
    return [r for r, run in enumerate(result.runs) if run.loss == loss]


def _grid(n: int) -> tuple[int, int]:
    return (1, n) if n <= 2 else (2, (n + 1) // 2)


def _guard_marks(ax: Axes, result: ToyResult, r: int) -> None:
    """The guard's actions (magenta) and the step kept (black dotted) of run ``r``, as vertical lines."""
    for index, action in enumerate(result.actions[r] if result.actions else []):
        label = f"guard {action['guard']}" if index == 0 else None
        ax.axvline(action["step"], color=COLOURS["guard"], lw=1.0, ls="-", alpha=0.8, label=label)
    kept = result.kept_step[r] if result.kept_step else None
    if kept is not None:
        ax.axvline(kept, color="k", lw=1.0, ls=":", label="kept")


def _likelihood_panel(ax: Axes, c: Curves, r: int, legend: bool = True, log: bool = False, result: ToyResult | None = None) -> None:
    steps = np.arange(c.chosen.shape[1])
    for key, label, name, style, width in SERIES:
        ax.plot(steps, getattr(c, name)[r].numpy(), style, color=COLOURS[key], label=label, lw=width)
    peak = int(c.chosen[r].argmax())
    ax.plot([peak], [float(c.chosen[r, peak])], "o", color=COLOURS["chosen"], ms=5)
    if result is not None:
        _guard_marks(ax, result, r)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="best")


def _gradient_panel(ax: Axes, c: Curves, r: int, legend: bool = True) -> None:
    steps = np.arange(c.chosen.shape[1])
    ax.plot(steps, (c.log_grad_chosen[r] / LN10).numpy(), color=COLOURS["chosen"], label="log10 |∂L/∂x1|")
    ax.plot(steps, (c.log_grad_rejected[r] / LN10).numpy(), color=COLOURS["rejected"], label="log10 |∂L/∂x2|")
    ax.plot(steps, (c.log_grad_ratio[r] / LN10).numpy(), ":", color="k", label="log10 |∂L/∂x2|/|∂L/∂x1| (largest pair)")
    ax.set_xlabel("step")
    ax.set_ylabel("log10 of the magnitude")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="best")


def plot_likelihoods(result: ToyResult, c: Curves, r: int, path: Path) -> Path:
    """The paper's Figure 2 for one run: likelihoods, gradient magnitudes, x2 → 0 on a log scale."""
    run = result.runs[r]
    fig = Figure(figsize=(14, 4), layout="constrained")
    a, b, d = fig.subplots(1, 3)
    _likelihood_panel(a, c, r, result=result)
    a.set(title="probability", ylabel="mean probability")
    _gradient_panel(b, c, r)
    b.set_title("gradient magnitudes (analytic)")
    _likelihood_panel(d, c, r, legend=False, log=True, result=result)
    d.set_title("the same, log scale: x2 → 0")
    guard = f", --guard {result.config.guard}" if result.config.guard else ""
    fig.suptitle(f"{run.loss}{guard} — {run.scenario.title}", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


def plot_scenarios(result: ToyResult, c: Curves, loss: str, path: Path) -> Path:
    """The paper's Figure 3: one panel per scenario, for one loss."""
    runs = _runs_of(result, loss)
    rows, cols = _grid(len(runs))
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for index, (ax, r) in enumerate(zip(axes, runs, strict=False)):
        _likelihood_panel(ax, c, r, legend=index == 0, result=result)
        ax.set_title(result.runs[r].scenario.title, fontsize=8.5)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    guard = f", --guard {result.config.guard} (magenta: its actions)" if result.config.guard else ""
    fig.suptitle(f"{loss}{guard}: likelihoods per scenario (dot = chosen peak)", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


def plot_gradients(result: ToyResult, c: Curves, loss: str, path: Path) -> Path:
    """log|∂L/∂x1| and log|∂L/∂x2| over the steps, one panel per scenario."""
    runs = _runs_of(result, loss)
    rows, cols = _grid(len(runs))
    fig = Figure(figsize=(5.2 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for index, (ax, r) in enumerate(zip(axes, runs, strict=False)):
        _gradient_panel(ax, c, r, legend=index == 0)
        ax.set_title(result.runs[r].scenario.title, fontsize=8.5)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    fig.suptitle(f"{loss}: gradient magnitudes, mean over pairs (Corollaries 1–2)", fontsize=11)
    fig.savefig(path, dpi=110)
    return path


def plot_sweep(result: ToyResult, c: Curves, path: Path) -> Path:
    """Rows: scenarios; columns: losses; each panel the four class curves of that run."""
    scenarios, losses = result.config.scenarios, result.config.losses
    width, height = 3.3 * len(losses) + 0.9, 2.5 * len(scenarios) + 0.9
    fig = Figure(figsize=(width, height))
    # a fixed layout: constrained layout costs more than all the drawing on a 4 × 4 grid
    fig.subplots_adjust(left=0.9 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.8 / height, wspace=0.08, hspace=0.12)
    axes = fig.subplots(len(scenarios), len(losses), squeeze=False, sharex=True, sharey=True)
    for r, run in enumerate(result.runs):
        row, col = run.scenario_index, losses.index(run.loss)
        ax = axes[row, col]
        _likelihood_panel(ax, c, r, legend=(row, col) == (0, 0), result=result)
        if row == 0:
            ax.set_title(run.loss, fontsize=11)
        ax.set_ylabel(f"scenario {run.scenario.name}\nprobability" if col == 0 else "")
        if row != len(scenarios) - 1:
            ax.set_xlabel("")
    fig.suptitle(
        "Toy sweep: mean probability over the steps of step 2 (rows: scenarios, columns: losses; dot = chosen peak)"
        + (f"; --guard {result.config.guard}, magenta: its actions" if result.config.guard else ""),
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    return path


def default_landscape_losses(result: ToyResult) -> list[str]:
    """DPO beside every other loss of the run (flex when the run only used DPO)."""
    others = [name for name in result.config.losses if name != "dpo"]
    return ["dpo", *(others or ["flex"])]


def write_figures(result: ToyResult, out: Path, landscape_losses: Sequence[str] = ()) -> list[Path]:
    c = curves(result)
    primary = result.config.losses[0]
    first = _runs_of(result, primary)[0]
    written = [
        plot_likelihoods(result, c, first, out / "likelihoods.png"),
        plot_scenarios(result, c, primary, out / "scenarios.png"),
        plot_gradients(result, c, primary, out / "gradients.png"),
    ]
    if len(result.config.losses) > 1:
        written.append(plot_sweep(result, c, out / "sweep.png"))
    names = list(landscape_losses) or default_landscape_losses(result)
    hyperparameters = result.config.hyperparameters
    written.append(plot_landscapes(names, out / "landscape.png", hyperparameters))
    return written
