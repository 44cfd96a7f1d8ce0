"""`dpo3d eval-poem`: the paper's poem and slogan evaluation (rule metrics, Table 3)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from dpo3d.data import datasets as ds
from dpo3d.data import records as rec
from dpo3d.judges import evaluation as ev
from dpo3d.poetry import POEM_METRICS, SLOGAN_METRICS

from . import options
from .common import UsageError, console
from .config_file import CONFIG
from .evaluating import (
    BATCH_SIZE,
    COLUMNS,
    LIMIT,
    MODELS,
    OUT,
    SEED,
    SUBSET,
    SUMMARY,
    TEMPERATURE,
    N,
    check_models,
    generate_all,
    print_costs,
    write_summary,
)

_NAMES = ", ".join(ev.POEM_DATA)

#: short column headers, so the table fits a terminal
HEADERS = {
    "row_number": "rows", "words_per_row": "words", "rhythm": "rhythm", "tone_pattern": "tone",
    "title": "title", "word_count": "length", "content": "content",
}


def _check_completion(record: Mapping, source: str, line: int) -> None:
    if "completion" not in record:
        raise rec.RecordError(source, line, "missing field 'completion'")


def command(
    config: Path = CONFIG,
    model: list[str] = MODELS,
    completions: str = typer.Option(
        None, "--completions", "-c",
        help="Score existing completions instead of generating: poem or slogan prompt records with a "
        f"**completion** (models told apart by `source`); {options.SOURCE_HELP}.",
    ),
    data: str = typer.Option(
        ev.DEFAULT_POEM_DATA, "--data", "-d",
        help=f"Prompts: {_NAMES} (the repository's data/ files), or a JSONL file of poem or slogan records.",
    ),
    columns: str = COLUMNS,
    subset: str = SUBSET,
    limit: int = LIMIT,
    n: int = N,
    temperature: float = TEMPERATURE,
    seed: int = SEED,
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="Stop a poem after this many tokens."),
    batch_size: int = BATCH_SIZE,
    out: Path = OUT,
    summary: Path = SUMMARY,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """Evaluate models on poems and slogans with the paper's rules (Table 3): each metric's mean, by form.

    Each **--model** writes one poem per prompt of **--data** (greedy unless **-n**/**--temperature** say
    otherwise; plain-text prompts go through the model's chat template); **--completions FILE** scores
    existing outputs instead. Poems get **row_number, words_per_row, rhythm, tone_pattern** (Chinese) and
    **title**; slogans **word_count** and **content**; `score` is their mean (see `data/poems/README.md`).

    The tables (stderr; one for poems, one for slogans) have a row per model and below it one per form;
    **--out** writes every completion with its `metrics` and `score`, **--summary** the means as JSON.

    Example: `dpo3d eval-poem --model smollm2-135m-instruct --data poems:test --limit 60 --summary poems.json`
    """
    models = check_models(model, completions)
    costs: dict[str, dict] = {}
    if completions is not None:
        records, positions, source = ev.read_completions(options.data_spec(completions, subset, columns), _check_completion)
        keep = ev.first_problems(records, limit)
        records, positions = [records[i] for i in keep], [positions[i] for i in keep]
        scored = ev.score_poem_records(records, source.name, positions)
        scored = [{**record, "source": ev.model_of(record, source.stem)} for record in scored]
    else:
        config = ev.eval_config(n, temperature, max_new_tokens, batch_size, seed)
        path = ev.resolve_poem_data(data)
        prompts = ds.load_prompts(options.data_spec(path, subset, columns), limit=limit)
        if not prompts:
            raise UsageError(f"{data}: no prompts to evaluate (--limit 0?)")
        for number, prompt in enumerate(prompts, start=1):
            try:
                ev.form_of(prompt)
            except ValueError as err:
                raise rec.RecordError(str(path), number, str(err)) from None
        generated, costs = generate_all(
            models, [ev.as_chat(p) for p in prompts], config, dtype, device, trust_remote_code, allow_pickle
        )
        scored = ev.score_poem_records(generated, "<generated>")

    result = ev.poem_summary(scored)
    if out is not None:
        rec.write_records(scored, out)
    if summary is not None:
        write_summary(summary, "poem", completions or data, limit, None if completions is not None else config,
                      result, costs)
    for table in poem_tables(result):
        console.print(table)
    print_costs(costs)


def poem_tables(result: Mapping) -> list[Table]:
    """Table 3's layout, one table for poems and one for slogans (when there are both): a row per
    model (all its forms) and below it one per form; a column per metric, then the mean score."""
    models = result["models"]
    tables = []
    for task, metrics, title in (("poem", POEM_METRICS, "poems"), ("slogan", SLOGAN_METRICS, "slogans")):
        shown = {label: s for label, s in models.items() if task in s.get("by_task", {})}
        if not shown:
            continue
        present = [m for m in metrics if any(m in s["by_task"][task]["metrics"] for s in shown.values())]
        table = Table(title=f"eval-poem: {title}, rule metrics (means in [0, 1])", title_justify="left",
                      box=box.SIMPLE_HEAD)
        table.add_column("model / form", overflow="fold")
        table.add_column("n", justify="right")
        for metric in present:
            table.add_column(HEADERS[metric], justify="right", no_wrap=True)
        table.add_column("score", justify="right", style="bold", no_wrap=True)

        def cells(values: Mapping, present=present) -> list[str]:
            return [f"{values[m]:.3f}" if m in values else "—" for m in [*present, "score"]]

        for label, summary in shown.items():
            group = summary["by_task"][task]
            table.add_row(f"[bold]{escape(label)}[/]", str(group["count"]), *cells(group["metrics"]))
            forms = {f: g for f, g in summary["by_form"].items() if f.startswith("slogan-") == (task == "slogan")}
            if len(forms) > 1:
                for form, values in forms.items():
                    table.add_row(f"  {form}", str(values["count"]), *cells(values["metrics"]), style="dim")
        tables.append(table)
    return tables
