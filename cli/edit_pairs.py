"""`dpo3d edit-pairs`: prompt records with a reference solution in, minimal-edit pairs out."""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.data import records as rec
from dpo3d.pairs.minimal_edit import MinimalEditConfig, build_edit_pairs

from . import datasets as prompt_options
from . import options
from .common import UsageError, console
from .config_file import CONFIG


def command(
    config: Path = CONFIG,
    prompts: str = typer.Argument(
        rec.STDIO,
        help=f"Prompt records with a `reference` (or `solution`) and an `answer`: a built-in dataset "
        f"(see `dpo3d datasets`), or {options.SOURCE_HELP}.",
    ),
    out: Path = options.OUT,
    seed: int = typer.Option(
        MinimalEditConfig.seed, "--seed", help="Seed of the wrong answers (and of --shuffle): same seed, same pairs."
    ),
    max_shift: int = typer.Option(
        MinimalEditConfig.max_shift, "--max-shift", min=1, help="The wrong answer is the right one ± k, 1 ≤ k ≤ this."
    ),
    template: str = prompt_options.TEMPLATE,
    where: list[str] = prompt_options.WHERE,
    shuffle: bool = options.SHUFFLE,
    limit: int = options.LIMIT,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
) -> None:
    """Pair each prompt's reference solution (chosen) with the same text whose final answer is wrong (rejected).

    No model and no sampling: chosen and rejected share every token up to the final answer (the
    last \\boxed{N}, or GSM8K's #### N), so DPO's likelihood displacement can be studied on pairs that
    differ only where a judge looks. Only that span changes; the same number in the working is kept.
    The wrong answer is the right one ± k (1 ≤ k ≤ --max-shift), drawn from --seed and the record's
    id, in the answer's format (decimals, thousands commas) and sign. Records without a solution or
    a plain-number final answer matching their `answer` are skipped and counted.

    Writes **{id, prompt, chosen, rejected, answer, edited_answer, answer_span, ...}** (the prompt
    record's other fields pass through; answer_span is [start, end) of the answer in chosen), ready
    for `train-dpo --pairs` and `logprobs`; prints the records read, kept and skipped (and why) on stderr.

    Example: `dpo3d edit-pairs gsm8k:train --limit 64 --seed 0 -o pairs.jsonl`
    """
    config = MinimalEditConfig(seed=seed, max_shift=max_shift)
    records = prompt_options.load_prompts(prompts, template, where, shuffle, seed, limit, subset, columns)
    pairs, stats = build_edit_pairs(records, config)
    skipped = "".join(f"\n  skipped: {reason}: {count}" for reason, count in stats.skipped.most_common())
    console.print(
        f"edit-pairs: read {stats.read}, kept {stats.kept}, skipped {stats.read - stats.kept}{skipped}",
        highlight=False, soft_wrap=True, markup=False,
    )
    if not pairs:
        raise UsageError(f"{prompts}: no pair could be built (map the solution and answer fields with --columns?)")
    rec.write_records(pairs, out)
