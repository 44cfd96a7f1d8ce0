"""`dpo3d diagnose`: the 3D detector over finished runs' metrics.jsonl, with these or other thresholds; with
--pairs, over any trainer's saved checkpoints (scored first)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dpo3d.data import records as rec
from dpo3d.watch.checkpoints import find_checkpoints, score_checkpoints
from dpo3d.watch.detector import DetectorSettings
from dpo3d.watch.diagnose import diagnose, table
from dpo3d.watch.figures import plot_runs
from dpo3d.watch.probes import ProbeOptions

from . import options as shared
from .common import console
from .config_file import CONFIG
from .config_options import OptionGroup, with_options

_P = ProbeOptions
SCORED = "3d-checkpoints"  # where a run's scored checkpoints go without --out


#: the detector's thresholds (DetectorSettings' fields: --drop-ratio, --min-rate, --min-fall, ...)
DETECTOR = OptionGroup(DetectorSettings)


@with_options(DETECTOR)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    runs: list[Path] = typer.Argument(..., help="Run folders: train-dpo's or the TRL callback's (each holds "
                                                "metrics.jsonl; run_config.json names the model, loss, β and lr), "
                                                "or with --pairs any trainer's output_dir of checkpoint-N folders."),
    pairs: str = typer.Option(None, "--pairs", help="Score each RUN's checkpoint-N folders (TRL, 🤗 Trainer; full "
                              "models or PEFT adapters) on these probe pairs first (any pair source dpo3d reads), "
                              "then read them: the same record train-dpo writes live."),
    columns: str = shared.COLUMNS,
    subset: str = shared.SUBSET,
    base: str = typer.Option(None, "--base", help="With --pairs: the model training started from (step 0, the "
                             "baseline). Default: the base model the adapter checkpoints name."),
    probe_size: int = typer.Option(_P.probe_size, "--probe-size", min=1, help="With --pairs: pairs probed (seeded subset)."),
    seed: int = typer.Option(_P.seed, "--seed", help="With --pairs: picks the probed pairs (as train-dpo's --seed)."),
    max_length: int = typer.Option(_P.max_length, "--max-length", min=8, help="With --pairs: tokens per prompt+response."),
    greedy_tokens: int = typer.Option(_P.greedy_tokens, "--greedy-tokens", help="With --pairs: length of the "
                                      "starting model's greedy response per probe prompt (a response in no pair); 0: none."),
    out: Path = typer.Option(None, "--out", "-o", help=f"With --pairs and one RUN: where the scores go (default RUN/{SCORED}).",
                                callback=shared.output("file")),
    table_out: Path = typer.Option(None, "--table", help="Write the Markdown table here (one row per loss, mean ± sd "
                                   "over its runs, then one per run).", callback=shared.output("file")),
    figure: Path = typer.Option(None, "--figure", help="Draw the runs here (PNG): per loss mean ± sd of the chosen and "
                                "rejected changes, the other tokens' share, each event marked.",
                                callback=shared.output("file")),
) -> None:
    """Name the 3D-property each run shows, again, from its logged probes: no training, no model.

    The detector train-dpo runs live (see docs/diagnostics.md, "Reading the warnings"):
    **drastic drop** (the chosen rises, the rejected falls ≥ --drop-ratio× faster, per token),
    **likelihood displacement** (the chosen falls from the start), **degradation** (the chosen
    rose, then fell from its peak while the margin grows) and **dispersion** (both fall while
    responses in no pair, or other tokens at the first differing token, gain). Changes inside the
    run's measured rounding noise never count.

    Writes every event as a JSON line to stdout ({run, property, step, since, per_token, summed,
    message, ...}); prints each run's events and the table on stderr.

    With --pairs, each RUN is another trainer's output_dir: its checkpoint-N folders (and --base as step 0)
    are scored on the probe pairs into RUN/3d-checkpoints (metrics.jsonl, summary.json), then read the same way.

    Examples: `dpo3d diagnose runs/dpo runs/flex --min-fall 2 --table t.md --figure f.png`;
    `dpo3d diagnose trl_out --pairs pairs.jsonl --base HuggingFaceTB/SmolLM2-135M-Instruct`
    """
    settings = DETECTOR.build(ctx.params)
    if pairs is not None:
        if out is not None and len(runs) > 1:
            raise typer.BadParameter("--out takes one RUN (each run's scores go to RUN/" + SCORED + " otherwise)")
        options = ProbeOptions(probe_size=probe_size, seed=seed, max_length=max_length, greedy_tokens=greedy_tokens)
        scored = []
        for run in runs:
            checkpoints = find_checkpoints(run)
            if not checkpoints:
                raise typer.BadParameter(f"{run}: no checkpoint-N folders to score")
            target = out or run / SCORED
            score_checkpoints(checkpoints, shared.data_spec(pairs, subset, columns), target, base, options, settings,
                              on_step=lambda step, run=run: console.print(f"{run}: scoring step {step}"))
            scored.append(target)
        runs = scored
    found = [diagnose(run, settings) for run in runs]
    rec.write_records(({"run": str(d.run), **event} for d in found for event in d.events), rec.STDIO)
    for d in found:
        console.print(f"[bold]{d.run}[/bold] — {d.label}")
        for event in d.events or [{"message": "no 3D-property above the thresholds"}]:
            console.print(f"  {event['message']}")
    summary = Table(title="what each run shows", title_justify="left")
    for column in ("run", "loss", "peak step", "chosen Δ peak → final (nats)", "rejected Δ final", "events"):
        summary.add_column(column)
    for d in found:
        row = d.row
        summary.add_row(d.run.name, d.loss, str(row["peak_step"]), f"{row['chosen_peak']:+.2f} → {row['chosen_final']:+.2f}",
                        f"{row['rejected_final']:+.2f}", ", ".join(e["property"] for e in d.events) or "none")
    console.print(summary)
    if table_out is not None:
        with rec.open_output(table_out) as handle:
            handle.write(table(found))
        console.print(f"table → {table_out}")
    if figure is not None:
        console.print(f"figure → {plot_runs(found, figure)}")
