"""What `eval-math` and `eval-poem` share: their generation options, the models to run, generating
every model's completions with a progress bar, and the summary file."""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import typer

from dpo3d.data import records as rec
from dpo3d.generation.sampler import SamplingConfig
from dpo3d.judges import evaluation as ev
from dpo3d.models.loading import BUNDLED

from . import options
from .common import UsageError, console, progress
from .sample import open_sampler

MODELS = typer.Option(
    None, "--model", "-m",
    help=f"A model to evaluate (repeatable: models side by side): a Hugging Face folder, a hub id or "
    f"'{BUNDLED}' (the default).",
)
N = typer.Option(1, "-n", min=1, help="Completions per prompt; 1 = greedy, more = sampled (the scores are then over all completions).")
TEMPERATURE = typer.Option(
    None, "--temperature", min=0.0, help="Sampling temperature (default: 0 = greedy with -n 1, else 0.7)."
)
SEED = typer.Option(0, "--seed", help="Seed of the sampling (with -n > 1 or --temperature > 0).")
BATCH_SIZE = typer.Option(16, "--batch-size", "-b", min=1, help="Sequences generated together.")
COLUMNS, SUBSET = options.COLUMNS, options.SUBSET  # of --data and --completions alike
LIMIT = options.LIMIT
OUT = typer.Option(None, "--out", "-o", help="Write every scored completion as JSONL here ('-' = stdout).",
                   callback=options.output("file"))
SUMMARY = typer.Option(None, "--summary", help="Write the summary (what the table shows, and more) as JSON here.",
                       callback=options.output("file"))


def check_models(models: list[str] | None, completions: str | None) -> list[str]:
    """The models to run (the bundled one by default); none with --completions."""
    if completions is not None:
        if models:
            raise UsageError("give --model (generate) or --completions (score existing outputs), not both")
        return []
    models = list(models or [BUNDLED])
    duplicates = sorted({model for model in models if models.count(model) > 1})
    if duplicates:
        raise UsageError(f"--model {duplicates[0]} is given twice")
    return models


def generate_all(
    models: Sequence[str], prompts: list[dict], config, dtype: str, device: str, trust_remote_code: bool,
    allow_pickle: bool = False,
    backend: str = "hf",
) -> tuple[list[dict], dict[str, dict]]:
    """Every model's completions of ``prompts`` (loaded one model at a time, progress on stderr),
    and per model what it cost: ``{label: {seconds, new_tokens}}``."""
    labels = ev.model_labels(models)
    completions: list[dict] = []
    costs: dict[str, dict] = {}
    for model in models:
        label = labels[model]
        sampler = open_sampler(backend, model, config, dtype, device, trust_remote_code, allow_pickle)
        totals = {"tokens": 0, "seconds": 0.0}
        start = time.perf_counter()
        with progress() as bar:
            task = bar.add_task(f"generate {label}", total=len(prompts), rate="")

            def chunk_done(result, bar=bar, task=task, totals=totals) -> None:
                totals["tokens"] += result.new_tokens
                totals["seconds"] += result.seconds
                rate = totals["tokens"] / totals["seconds"] if totals["seconds"] else 0.0
                bar.update(task, advance=result.prompts_done, rate=f"{rate:,.0f} tok/s")

            completions.extend(ev.generate(sampler, prompts, label, on_chunk=chunk_done))
        costs[label] = {"seconds": round(time.perf_counter() - start, 2), "new_tokens": totals["tokens"]}
        del sampler
        gc.collect()
    return completions, costs


def write_summary(path: Path, task: str, data: str, limit: int | None, sampling: SamplingConfig | None,
                  result: Mapping, costs: Mapping) -> None:
    """The summary JSON: the task, what was evaluated (and, when generated, with what sampling), the
    numbers, the costs."""
    settings = {"data": str(data), "limit": limit}
    if sampling is not None:
        settings.update(n=sampling.n, temperature=sampling.temperature, seed=sampling.seed,
                        max_new_tokens=sampling.max_new_tokens)
    rec.write_json({"task": task, **settings, **result, "generation": costs}, path)


def print_costs(costs: Mapping[str, Mapping]) -> None:
    for label, cost in costs.items():
        console.print(f"{label}: generated {cost['new_tokens']} tokens in {cost['seconds']:.1f} s", highlight=False)
