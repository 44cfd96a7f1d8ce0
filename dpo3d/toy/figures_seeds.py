"""Figures over several seeds: a line for the mean, a band for ± one sd (sample sd, n − 1).

``plot_sweep_bands``: rows scenarios, columns losses, each panel the four mass shares
of figures.SERIES (own chosen, rejected 5–8, other prompts' chosen, unseen 9–10) and x2.
``plot_ablation``: the chosen π(i|i) of each ablation variant, one panel per scenario.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .ablation import DESCRIPTIONS, AblationConfig, Trace
from .figures import COLOURS, SERIES
from .indicators import curves
from .seeds import SD_DDOF
from .train import ToyResult

ABLATION_COLOURS = {"default": "#1b9e77", "alone": "#7570b3", "tabular": "#e6ab02", "sgd": "#d95f02"}


def mean_sd_curves(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, steps) -> the mean and the sample sd (zeros for one seed) over the seeds, per step."""
    mean = stacked.mean(0)
    sd = stacked.std(0, ddof=SD_DDOF) if stacked.shape[0] > 1 else np.zeros_like(mean)
    return mean, sd


def _band(ax: Axes, values: np.ndarray, colour: str, label: str, style: str = "-", width: float = 1.6) -> None:
    mean, sd = mean_sd_curves(values)
    steps = np.arange(mean.shape[0])
    ax.plot(steps, mean, style, color=colour, lw=width, label=label)
    ax.fill_between(steps, mean - sd, mean + sd, color=colour, alpha=0.2, lw=0)


def plot_sweep_bands(results: Mapping[int, ToyResult], path: Path) -> Path:
    """The sweep grid over seeds: each curve is the mean over the seeds with a ± sd band."""
    first = next(iter(results.values()))
    scenarios, losses = first.config.scenarios, first.config.losses
    per_seed = [curves(result) for result in results.values()]
    width, height = 3.3 * len(losses) + 0.9, 2.5 * len(scenarios) + 1.0
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.9 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.9 / height, wspace=0.08, hspace=0.12)
    axes = fig.subplots(len(scenarios), len(losses), squeeze=False, sharex=True, sharey=True)
    for r, run in enumerate(first.runs):
        row, col = run.scenario_index, losses.index(run.loss)
        ax = axes[row, col]
        for key, label, name, style, line_width in SERIES:
            stacked = torch.stack([getattr(c, name)[r] for c in per_seed]).numpy()
            _band(ax, stacked, COLOURS[key], label, style, line_width)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if (row, col) == (0, 0):
            ax.legend(fontsize=6.5, loc="center right")
        if row == 0:
            ax.set_title(run.loss, fontsize=11)
        ax.set_ylabel(f"scenario {run.scenario.name}\nmean probability" if col == 0 else "")
        if row == len(scenarios) - 1:
            ax.set_xlabel("step")
    seeds = list(results)
    fig.suptitle(
        f"Toy sweep over {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean over seeds (line) ± 1 sd (band) of each "
        "prompt's mass,\nmean over prompts; rows: scenarios, columns: losses; only the unseen 9–10 share is dispersion",
        fontsize=9.5,
    )
    fig.savefig(path, dpi=100)
    return path


def plot_ablation(config: AblationConfig, results: Mapping[int, Mapping[str, Trace]], path: Path) -> Path:
    """Chosen π(i|i) per variant, mean ± sd over seeds, one panel per scenario."""
    n = len(config.scenarios)
    fig = Figure(figsize=(4.2 * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for s, (ax, scenario) in enumerate(zip(axes, config.scenarios, strict=True)):
        for variant in config.variants:
            stacked = torch.stack([traces[variant].chosen[s] for traces in results.values()]).numpy()
            _band(ax, stacked, ABLATION_COLOURS[variant], f"{variant}: {DESCRIPTIONS[variant]}")
        ax.set_title(f"scenario {scenario.name}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("chosen π(i|i), mean over trained prompts")
    axes[0].legend(fontsize=6.5, loc="lower right")
    fig.suptitle(f"What drives the toy's degradation: DPO, mean ± sd over {len(results)} seeds", fontsize=11)
    fig.savefig(path, dpi=100)
    return path
