"""`dpo3d sample`: N candidate completions per prompt, batched, seeded, resumable."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dpo3d.data import records as rec
from dpo3d.generation.sampler import BACKENDS, SamplingConfig, check_backend, load_sampler
from dpo3d.generation.sampling_run import (
    check_output,
    prepare_prompts,
    sample_to_file,
    sample_to_stream,
    settings_path,
)
from dpo3d.models.loading import display_name, pick_device
from dpo3d.models.precision import inference_dtype

from . import datasets as prompt_options
from . import options
from .common import UsageError, console, progress
from .config_file import CONFIG


def command(
    config: Path = CONFIG,
    prompts: str = prompt_options.PROMPTS,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    model: str = options.MODEL,
    n: int = typer.Option(SamplingConfig.n, "-n", min=1, help="Candidates per prompt."),
    temperature: float = typer.Option(SamplingConfig.temperature, "--temperature", min=0.0, help="Sampling temperature; 0 = greedy (with -n 1)."),
    top_p: float = typer.Option(SamplingConfig.top_p, "--top-p", help="Nucleus sampling: keep the smallest token set with this much probability."),
    max_new_tokens: int = typer.Option(SamplingConfig.max_new_tokens, "--max-new-tokens", min=1, help="Stop a candidate after this many tokens."),
    batch_size: int = typer.Option(
        SamplingConfig.batch_size, "--batch-size", "-b", min=1,
        help="Sequences generated together: chunks of max(1, batch-size // n) prompts, each seeded from --seed.",
    ),
    seed: int = typer.Option(SamplingConfig.seed, "--seed", help="Seed of the sampling (and of --shuffle): same seed, same candidates."),
    source: str = typer.Option(None, "--source", help="The candidates' `source` label (default: the model's name)."),
    template: str = prompt_options.TEMPLATE,
    where: list[str] = prompt_options.WHERE,
    shuffle: bool = options.SHUFFLE,
    limit: int = options.LIMIT,
    out: Path = typer.Option(
        Path("-"), "--out", "-o",
        help="Output JSONL ('-' = stdout). A file is appended chunk by chunk, with its settings in FILE.run.json.",
        callback=options.output("file"),
    ),
    resume: bool = options.RESUME,
    backend: str = typer.Option("hf", "--backend", help=f"Generation engine: {', '.join(BACKENDS)} (vllm: if installed)."),
    dtype: str = options.SAMPLE_DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """Sample **-n** candidate completions for every prompt, with the KV cache, in batches.

    Writes one record per candidate: the prompt record's fields plus **completion, sample_index, source**, completion_tokens and finish_reason (stop, or length when cut at --max-new-tokens). Built-ins and records with a `question` get the instruction template (step by step, final answer in \\boxed{}) as a chat message; a record's ready `prompt` is used as it is (chat messages through the model's chat template).

    The same command with the same --seed gives the same candidates. With **--out FILE --resume** an interrupted run continues where it stopped and writes exactly the file the uninterrupted run would have, with no candidate twice. Progress and tokens/s go to stderr.

    Example: `dpo3d sample --prompts math:train --limit 200 -n 8 | dpo3d judge math | dpo3d build-pairs > pairs.jsonl`
    """
    config = SamplingConfig(
        n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed
    )
    config.validate()
    check_backend(backend)
    to_file = str(out) != rec.STDIO
    if resume and not to_file:
        raise UsageError("--resume needs --out FILE (a run written to stdout cannot be continued)")
    if to_file:
        check_output(out, resume)
    records = prepare_prompts(prompt_options.load_prompts(prompts, template, where, shuffle, seed, limit, subset, columns))
    if not records:
        raise UsageError(f"{prompts}: no prompts left to sample (after --where and --limit)")
    label = source or display_name(model)
    try:
        dtype = inference_dtype(dtype, pick_device(device))  # auto: what this device samples fastest in
    except ValueError as error:
        raise UsageError(f"--dtype: {error}") from None
    sampler = open_sampler(backend, model, config, dtype, device, trust_remote_code, allow_pickle)

    with progress() as bar:
        task = bar.add_task("sample", total=len(records), rate="")
        totals = {"tokens": 0, "seconds": 0.0}

        def started(total: int, skipped: int) -> None:
            bar.update(task, total=total, completed=skipped)

        def chunk_done(result) -> None:
            totals["tokens"] += result.new_tokens
            totals["seconds"] += result.seconds
            rate = totals["tokens"] / totals["seconds"] if totals["seconds"] else 0.0
            bar.update(task, advance=result.prompts_done, rate=f"{rate:,.0f} tok/s")

        if not to_file:
            summary = sample_to_stream(sampler, records, label, sys.stdout, on_start=started, on_chunk=chunk_done)
        else:
            settings = {"model": model, "backend": backend, "dtype": dtype}
            try:
                summary = sample_to_file(
                    sampler, records, label, out, resume=resume, settings=settings,
                    on_start=started, on_chunk=chunk_done,
                )
            except KeyboardInterrupt:
                bar.stop()
                console.print(
                    f"interrupted: the finished chunks are in {out}; run the same command with --resume to go on",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(130) from None
    skipped = f", {summary.skipped_prompts} already in {out}" if summary.skipped_prompts else ""
    console.print(
        f"sample: {summary.prompts} prompts × {n} ({label}){skipped}; wrote {summary.candidates} candidates, "
        f"{summary.new_tokens} tokens in {summary.seconds:.1f} s ({summary.tokens_per_second:,.0f} tok/s)"
        + (f"; settings in {settings_path(out)}" if to_file else ""),
        highlight=False,
        soft_wrap=True,
    )


def open_sampler(backend: str, model: str, config: SamplingConfig, dtype: str, device: str, trust_remote_code: bool,
                 allow_pickle: bool = False):
    """The library's sampler for the command's flags, loaded under a status line."""
    load = options.load_options(dtype, trust_remote_code, padding_side="left", allow_pickle=allow_pickle)
    with console.status(f"loading {model}"):
        return load_sampler(backend, model, config, load, device)
