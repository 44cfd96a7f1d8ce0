"""`dpo3d iterate`: on-policy iterative DPO, rounds of sample → judge → build-pairs → train-dpo."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dpo3d.iterate import IterateConfig, IterateEvents, run_iterate
from dpo3d.iterate.config import ITERATE_LOOP_DEFAULTS, ITERATE_LOOP_HELP
from dpo3d.iterate.report import sample_text
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig

from . import loss_options as lo
from . import options
from . import training_options as t
from .common import console
from .config_file import CONFIG
from .config_options import OptionGroup, with_options
from .datasets import PROMPTS, prompt_source
from .train_dpo import LOGPROBS, LOSS_HELP, PROBE_RESPONSES, SHOWN

#: each round's loop (LoopConfig's fields but --resume: a rerun resumes by itself), with iterate's defaults
ITERATE_LOOP = OptionGroup(LoopConfig, exclude=frozenset({"resume"}), defaults=ITERATE_LOOP_DEFAULTS,
                           helps=ITERATE_LOOP_HELP)
#: iterate's own settings, and train-dpo's (but the reference and probe pairs: iterate sets them each round)
ITERATE = OptionGroup(IterateConfig)
ROUND = OptionGroup(DPORunConfig, exclude=frozenset({"ref", "probe_pairs"}))


def _events(display: t.LiveDisplay) -> IterateEvents:
    def stage(name: str, what: str) -> None:
        display.say(f"== {name}: {what}", "bold")

    def done(name: str, cost: dict) -> None:
        details = ", ".join(f"{k} {v}" for k, v in cost.items() if k != "seconds" and not isinstance(v, dict))
        display.say(f"   {name} took {cost['seconds']:.1f} s" + (f" ({details})" if details else ""), "green")

    progress_seen: dict[str, int] = {}

    def progress(name: str, done_count: int, total: int) -> None:
        if progress_seen.get(name) != done_count:
            progress_seen[name] = done_count
            display.say(f"   {name}: {done_count}/{total}", "dim")

    return IterateEvents(on_stage=stage, on_done=done, on_progress=progress,
                         on_skip=lambda name, why: display.say(f"== {name}: skipped, {why}", "dim"),
                         on_status=lambda message: display.say(f"   {message}", "dim"),
                         training=lambda label: display.next_run())


@with_options(ITERATE_LOOP, ITERATE, ROUND, PROBE_RESPONSES, LOGPROBS, t.LORA)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    prompts: str = PROMPTS,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    limit: int = options.LIMIT,
    out: Path = typer.Option(..., "--out", "-o", help="The run folder (rerun the same command to continue it).",
                                callback=options.output("folder")),
    model: str = options.MODEL,
    loss: str = typer.Option("dpo", "--loss", "-l", help=LOSS_HELP),
    loss_args: list[str] = lo.LOSS_ARG,
    list_losses: bool = lo.LIST_LOSSES,
    max_length: int = options.MAX_LENGTH,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """On-policy iterative DPO: each round samples from the current policy, judges, pairs and trains.

    Round r samples **-n** candidates per prompt from its policy (the starting --model, then round r-1's
    trained model), scores them with **--reward** (math-verify by default), pairs each prompt's best against its worst, and trains
    train-dpo (any --loss, --guard, LoRA) on those pairs for --max-steps. **--reference initial** keeps the
    starting model as every round's reference; **previous** moves it to the round's start. Round 1's probe
    pairs are tracked in every round, so OUT/probes.png and the detector span the whole run.

    OUT gets **iterate.md** and **iterate.json** (a row per round: mean sample score, pairs, probe changes,
    events; the whole run's events and each stage's cost), **probes.png**, and per round OUT/round-R/
    (samples.jsonl, judged.jsonl, pairs.jsonl and train/, an ordinary run folder). Rerunning the same command
    skips what is done and resumes the stage where it stopped.

    Example: `dpo3d iterate --prompts gsm8k:train --limit 24 --prompts-per-round 8 --rounds 3 -n 4 --out runs/iter`
    """
    (bound,) = lo.bind_cli_losses(ctx.params, [loss])
    load = options.load_options(dtype, trust_remote_code, allow_pickle=allow_pickle)
    loop = t.loop_config(ctx.params, group=ITERATE_LOOP)
    train = ROUND.build(ctx.params, model=model, pairs="", loop=loop, loss=bound, max_length=max_length, load=load,
                        lora=t.lora_config(ctx.params), probe_responses=PROBE_RESPONSES.build(ctx.params),
                        logprobs=LOGPROBS.build(ctx.params))
    run = ITERATE.build(ctx.params, out=out, model=model, prompts=prompt_source(prompts, subset, columns), train=train,
                        limit=limit, device=device, load=load)
    display = t.LiveDisplay(SHOWN)
    with t.running(display, rerun_to_continue=out):
        report = run_iterate(run, _events(display))
    console.print(round_table(report["rounds"]))
    events = "; ".join(f"{e['property']} at step {e['step']}" for e in report["events"]) or "none"
    console.print(f"whole run, detector: {events}", highlight=False)
    console.print(f"[green]done[/]: {out}/iterate.md, iterate.json, probes.png")


def round_table(rows: list[dict]) -> Table:
    table = Table(title="iterate: one row per round", title_justify="left")
    for header in ("round", "pairs", "samples", "chosen Δ", "rejected Δ", "events"):
        table.add_column(header, justify="left" if header in ("round", "events") else "right")
    for row in rows:
        table.add_row(str(row["round"]), str(row["pairs"]), sample_text(row), f"{row['chosen_delta']:.2f}",
                      f"{row['rejected_delta']:.2f}", "; ".join(e["property"] for e in row["events"]) or "—")
    return table

