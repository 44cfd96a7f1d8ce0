"""`dpo3d build-pairs`: judged candidates in, TRL preference pairs out."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dpo3d.data import records as rec
from dpo3d.pairs.building import REFERENCE, PairConfig, PairStats, build_pairs, read_candidates

from . import options
from .common import console, fail
from .config_file import CONFIG


def command(
    config: Path = CONFIG,
    inputs: list[str] = typer.Argument(
        None, help=f"Judged candidates ('-' or none = stdin); several are grouped together by id. Each: {options.SOURCE_HELP}."
    ),
    out: Path = options.OUT,
    chosen_from: str = typer.Option(
        None, "--chosen-from", help=f"Take chosen from this source label only, or '{REFERENCE}' (the dataset's solution)."
    ),
    rejected_from: str = typer.Option(
        None, "--rejected-from", help=f"Take rejected from this source label only, or '{REFERENCE}'."
    ),
    min_gap: float = typer.Option(
        0.0, "--min-gap", min=0.0, help="Keep a pair only if chosen_score − rejected_score ≥ this (and > 0)."
    ),
    reference_score: float = typer.Option(
        1.0, "--reference-score", help="The score a reference solution counts as (1 for `judge math`; 5 on a 1–5 rubric)."
    ),
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
) -> None:
    """Pair each prompt's best candidate (chosen) with its worst (rejected).

    Candidates **{id, prompt, completion, score, source?, sample_index?}** are grouped by id;
    groups with no score gap are dropped. Ties go to the lower sample_index, then input order.
    The paper's four scenarios, with `policy` and `weak` as the two models' source labels:

    - **1** (default): chosen and rejected from the policy
    - **2** `--chosen-from reference --rejected-from policy`: the dataset's solution as chosen
    - **3** `--chosen-from policy --rejected-from weak`: another model's sample as rejected
    - **4** `--chosen-from reference --rejected-from weak`: both off-policy

    Writes **{id, prompt, chosen, rejected, chosen_score, rejected_score, chosen_source,
    rejected_source, unseen}** (unseen: the group's other candidates, for measuring dispersion);
    prints the groups read, kept and dropped (and why) on stderr.

    Example: `dpo3d build-pairs policy.jsonl weak.jsonl --rejected-from weak -o pairs.jsonl`
    """
    config = PairConfig(
        chosen_from=chosen_from, rejected_from=rejected_from, min_gap=min_gap, reference_score=reference_score
    )
    candidates = read_candidates(inputs or [rec.STDIO], subset=subset, columns=columns)
    pairs, stats = build_pairs(candidates, config)
    console.print(summary(stats))
    sources = ", ".join(f"{source} {count}" for source, count in stats.sources.most_common())
    console.print(f"candidates by source: {sources}", highlight=False)
    if not pairs:  # the next stage would fail on an empty input: fail here, where the reason is known
        why = (f"none of the {stats.groups} groups read had both a chosen and a rejected candidate (see the table)"
               if stats.groups else "the input held no scored candidate")
        fail(f"no pairs written: {why}", code=1)
    rec.write_records(pairs, out)


def summary(stats: PairStats) -> Table:
    table = Table(title=f"build-pairs: {stats.candidates} candidates", title_justify="left")
    table.add_column("groups")
    table.add_column("n", justify="right")
    table.add_row("read", str(stats.groups))
    table.add_row("kept (pairs written)", str(stats.kept))
    for reason, count in stats.dropped.most_common():
        table.add_row(f"dropped: {reason}", str(count))
    if stats.unscored:
        table.add_row("candidates left out: the judge could not score them (verdict.error)", str(stats.unscored))
    return table
