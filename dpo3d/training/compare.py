"""Several runs' curves side by side: the paper's Figure 4 (DPO vs reward-model accuracy).

Runs of different lengths are put on one axis by their share of training done
(step / total steps, from each run's run_config.json). ``steadiness`` summarises
how a curve moves: its net change, and how much of its movement went against
that net direction (0 = monotone: an accuracy that never dipped, a loss that
never rose).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dpo3d.data.run_log import read_log


@dataclass
class Curve:
    label: str
    task: str
    steps: list[int]
    values: list[float]
    total_steps: int

    @property
    def progress(self) -> list[float]:
        return [step / self.total_steps for step in self.steps]


def load_curve(run: str | Path, metric: str, label: str | None = None) -> Curve:
    run = Path(run)
    config_path = run / "run_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run}: no run_config.json (not a training run folder)")
    config = json.loads(config_path.read_text())
    extra = config.get("extra") or {}
    task = str(extra.get("task", "?"))
    if task == "dpo" and extra.get("loss", "dpo") != "dpo":
        task = f"dpo ({extra['loss']})"
    points = [(r["step"], r[metric]) for r in read_log(run / "metrics.jsonl") if isinstance(r.get(metric), (int, float))]
    if not points:
        raise ValueError(f"{run}: metrics.jsonl has no '{metric}' (for eval_accuracy, train with --eval-pairs)")
    return Curve(label or run.name, task, [p[0] for p in points], [float(p[1]) for p in points], int(config["steps"]))


def steadiness(values: list[float]) -> dict[str, float]:
    """start, final, min, max, the net change, and the share of the total movement against it."""
    moves = [b - a for a, b in zip(values, values[1:], strict=False)]
    travelled = sum(abs(m) for m in moves)
    net = values[-1] - values[0]
    against = sum(abs(m) for m in moves if m * net < 0)
    return {
        "start": values[0],
        "final": values[-1],
        "min": min(values),
        "max": max(values),
        "change": net,
        "against_share": against / travelled if travelled else 0.0,
        "points": len(values),
    }


def plot_curves(curves: list[Curve], metric: str, target: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for curve in curves:
        ax.plot(curve.progress, curve.values, "o-", ms=3, label=f"{curve.label} [{curve.task}]")
    ax.set(xlabel="share of training done (step / total steps)", ylabel=metric.replace("_", " "),
           title=f"{metric} over training" + (" (as in the paper's Fig. 4)" if metric == "eval_accuracy" else ""))
    if "accuracy" in metric:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
