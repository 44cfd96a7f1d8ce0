"""The study's figures: every cell's probe curves (the LLM counterpart of the toy's Fig. 3) and Fig. 4."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dpo3d.data.run_log import read_log

from ..training.compare import load_curve, plot_curves, steadiness
from .config import SCENARIO_TEXT

PROBES = (
    ("probe_chosen_logp_delta", "chosen", "tab:green"),
    ("probe_rejected_logp_delta", "rejected", "tab:red"),
    ("probe_unseen_logp_delta", "unseen", "tab:gray"),
)


def probe_series(folder: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Each probe's (steps, change since step 0) from a cell's metrics.jsonl."""
    records = read_log(Path(folder) / "metrics.jsonl")
    series = {}
    for key, name, _ in PROBES:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        series[name] = ([p[0] for p in points], [p[1] for p in points])
    return series


def plot_probes(cells: dict[tuple[int, str], Path], scenarios: Sequence[int], losses: Sequence[str], target: Path) -> Path:
    """A grid, a row per scenario and a column per loss: the log-prob change since step 0 of the
    chosen, rejected and unseen responses of the cell's probe set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(scenarios), len(losses), figsize=(3.4 * len(losses) + 1, 2.6 * len(scenarios) + 0.6),
                             squeeze=False, sharex=True, constrained_layout=True)
    for row, scenario in enumerate(scenarios):
        for column, loss in enumerate(losses):
            ax = axes[row][column]
            series = probe_series(cells[(scenario, loss)])
            for _, name, color in PROBES:
                steps, values = series[name]
                if steps:
                    ax.plot(steps, values, "o-" if len(steps) < 30 else "-", ms=2.5, color=color, label=name)
            ax.axhline(0, color="black", lw=0.5)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(loss)
            if column == 0:
                ax.set_ylabel(f"scenario {scenario}\n{SCENARIO_TEXT[scenario]}", fontsize=8)
            if row == len(scenarios) - 1:
                ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("log-prob change since step 0 on each cell's probe set (nats, summed over the response)")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def figure4(rm_folder: Path, dpo_folder: Path, target: Path, dpo_label: str = "DPO") -> dict[str, dict]:
    """Fig. 4 from the two run folders; returns each curve's steadiness (start, final, min, max, share against)."""
    curves = [load_curve(rm_folder, "eval_accuracy", "reward model"), load_curve(dpo_folder, "eval_accuracy", dpo_label)]
    plot_curves(curves, "eval_accuracy", target)
    return {curve.label: {**steadiness(curve.values), "steps": curve.steps, "values": curve.values} for curve in curves}
