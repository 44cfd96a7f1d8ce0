"""`dpo3d compare`: several training runs' curves in one figure and one table (the paper's Figure 4)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dpo3d.data.faults import OutputUnusable, check_output_file
from dpo3d.training.compare import load_curve, plot_curves, steadiness

from .common import console
from .config_file import CONFIG

#: the figure's name in a folder given as --out
FIGURE_NAME = "compare.png"


def figure_path(out: Path) -> Path:
    """Where the figure is written: into a folder given as ``--out`` (as compare.png), a path without a suffix
    as PNG with ``.png`` added (as matplotlib would), else as given in the format its suffix names. Refuses,
    before any run is read, a suffix matplotlib cannot write and a path that cannot be written."""
    target = out / FIGURE_NAME if out.is_dir() else out if out.suffix else out.with_name(out.name + ".png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    if target.suffix[1:].lower() not in formats:
        raise OutputUnusable(f"--out {out}: matplotlib cannot write '{target.suffix}' figures; give a path ending in "
                             f"{', '.join('.' + name for name in sorted(formats))}")
    check_output_file(target, "--out")
    return target


def command(
    config: Path = CONFIG,
    runs: list[Path] = typer.Argument(..., help="Run folders of train-dpo / train-rm / sft (each holds metrics.jsonl)."),
    metric: str = typer.Option("eval_accuracy", "--metric", help="The metrics.jsonl field to compare."),
    label: list[str] = typer.Option(None, "--label", help="A label per run, in order (default: the folder names)."),
    out: Path = typer.Option(
        Path(FIGURE_NAME), "--out", "-o",
        help=f"The figure: PNG, or the format its suffix names (.pdf, .svg, ...); a folder: {FIGURE_NAME} in it."),
) -> None:
    """Overlay a metric of several runs over their share of training, and tabulate how steady each is.

    The paper's Figure 4: train a reward model and a DPO policy on the same pairs with the
    same `--eval-pairs`, then compare their held-out preference accuracy — the reward model's
    (r_w > r_l) climbs steadily, DPO's implicit-reward accuracy (β log π/π_ref) wobbles.
    The table gives each curve's start, final, min and max, its net change and the share of
    its movement against that change (0 = monotone; an accuracy that wobbles scores above 0).

    Example: `dpo3d compare runs/rm runs/dpo --label RM --label DPO -o fig4.png`
    """
    target = figure_path(out)
    labels = list(label or [])
    if labels and len(labels) != len(runs):
        raise ValueError(f"--label given {len(labels)} times for {len(runs)} runs")
    curves = [load_curve(run, metric, labels[i] if labels else None) for i, run in enumerate(runs)]
    table = Table(title=f"{metric} over training", title_justify="left")
    for column in ("run", "task", "points", "start", "final", "min", "max", "change", "against-trend share"):
        table.add_column(column, justify="left" if column in ("run", "task") else "right")
    for curve in curves:
        s = steadiness(curve.values)
        table.add_row(curve.label, curve.task, str(s["points"]), *(f"{s[k]:.3f}" for k in ("start", "final", "min", "max", "change", "against_share")))
    console.print(table)
    console.print(f"figure → {plot_curves(curves, metric, target)}", soft_wrap=True)
