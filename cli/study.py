"""`dpo3d study`: scenarios 1-4 × losses on a real LLM, Tables 1, 2, 10, Fig. 4 (and Table 3 with --task poem)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dpo3d.judges.intervals import interval_text
from dpo3d.study import DEFAULT_LOSSES, LLMJudgeSettings, StudyConfig, StudyEvents, run_study
from dpo3d.study.config import SCENARIO_TEXT, STUDY_LOOP_DEFAULTS, STUDY_LOOP_FIELDS, STUDY_LOOP_HELP
from dpo3d.training.config import LoopConfig

from . import loss_options as lo
from . import options
from . import training_options as t
from .common import UsageError, console
from .config_file import CONFIG
from .config_options import OptionGroup, with_options
from .renamed import Renamed, renamed
from .train_dpo import PROBE_RESPONSES

POEM_DEFAULTS = ("poems:english-train", "poems:english-test")
MATH_DEFAULTS = ("gsm8k:train", "gsm8k:test")


def _events(display: t.LiveDisplay) -> StudyEvents:
    say = display.progress.console.print
    generating: dict[str, int] = {}

    def stage(name: str, what: str) -> None:
        say(f"[bold]== {name}[/]: {what}", highlight=False)

    def done(name: str, cost: dict) -> None:
        details = ", ".join(f"{k} {v}" for k, v in cost.items() if k not in ("seconds", "model") and not isinstance(v, dict))
        say(f"[green]   {name} done[/] in {cost.get('seconds', 0):.1f} s" + (f" ({details})" if details else ""),
            highlight=False)

    def generate(name: str, done_prompts: int, total: int) -> None:
        if generating.get(name) != done_prompts:
            generating[name] = done_prompts
            say(f"[dim]   {name}: {done_prompts}/{total} prompts[/]", highlight=False)


    return StudyEvents(
        on_stage=stage, on_done=done,
        on_skip=lambda name, why: say(f"[dim]== {name}: skipped, {why}[/]", highlight=False),
        on_status=lambda message: say(f"[dim]   {message}[/]", highlight=False),
        on_generate=generate, training=lambda label: display.next_run(),
    )


def _scenarios(values: list[int] | None) -> tuple[int, ...]:
    return tuple(values or (1, 2, 3, 4))


#: the loop settings every cell takes (LoopConfig's, with the study's defaults and meanings where they differ),
#: the study's own (StudyConfig's fields) and LoRA's
STUDY_LOOP = OptionGroup(LoopConfig, only=STUDY_LOOP_FIELDS, defaults=STUDY_LOOP_DEFAULTS, helps=STUDY_LOOP_HELP)
STUDY = OptionGroup(StudyConfig)


@renamed(Renamed("--steps", "max_steps", "--max-steps"),
         Renamed("--no-rm", "reward_model", "--no-reward-model", value=False))
@with_options(STUDY_LOOP, STUDY, PROBE_RESPONSES, t.LORA)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    out: Path = typer.Option(..., "--out", "-o", help="The study folder (rerun the same command to continue it).",
                                callback=options.output("folder")),
    model: str = options.MODEL,
    train_prompts: str = typer.Option(None, "--train-prompts", help=f"Training prompts: a built-in (gsm8k:train, math:train, svamp, ...) or a prompt file. Default {MATH_DEFAULTS[0]} ({POEM_DEFAULTS[0]} with --task poem)."),
    test_prompts: str = typer.Option(None, "--test-prompts", help=f"Held-out test prompts each model answers. Default {MATH_DEFAULTS[1]} ({POEM_DEFAULTS[1]} with --task poem)."),
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    scenario: list[int] = typer.Option(None, "--scenario", "-s", help="A scenario (repeatable; default all): " + "; ".join(f"{k} = {v}" for k, v in SCENARIO_TEXT.items()) + "."),
    loss: list[str] = typer.Option(None, "--loss", "-l", help=f"A loss of the registry (repeatable; default {', '.join(DEFAULT_LOSSES)}). With --task poem the first is DPO's."),
    all_prompts: bool = typer.Option(not StudyConfig.same_prompts, "--all-prompts/--same-prompts", help="Let each scenario train on every prompt it has a pair for (default: only the prompts every scenario has one for)."),
    loss_args: list[str] = lo.LOSS_ARG,
    list_losses: bool = lo.LIST_LOSSES,
    judge: str = options.JUDGE,
    base_url: str = options.BASE_URL,
    judge_model: str = options.JUDGE_MODEL,
    api_key_env: str = options.API_KEY_ENV,
    workers: int = options.workers(StudyConfig.math_workers, options.MATH_WORKERS_HELP),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """Run the paper's LLM experiments (§5) as one resumable study: scenarios 1-4 × losses.

    Samples **-n** candidates per training prompt from the policy (and, for scenarios 3-4, off-policy answers
    from **--weak-model** or the stand-in), judges them with math-verify, builds each scenario's pairs with
    build-pairs' sources, trains every (scenario, loss) cell from the same start with the same budget and seed
    (the 3D probes live), trains a reward model on scenario 1 (Fig. 4), and evaluates the start and every cell
    on the test prompts.

    OUT gets **study.md** and **study.json** (Table 1: per-token log-probs before → after, each cell's updates
    and passes over its pairs; Table 2: test accuracy with 95% Wilson intervals, in-domain and with
    **--ood-test-prompts** out-of-domain; Table 10: losses × scenarios; the detector's events), **probes.png** (each cell's chosen, rejected
    and unseen curves), **fig4.png**, and each cell as an ordinary run folder in OUT/cells. Rerunning the same
    command skips what is done and resumes an interrupted cell. **--task poem** runs Table 3 instead: DPO on
    poem-rule pairs vs RLHF-PPO with --reward poem, from the same start and the same number of generated samples.

    Example: `dpo3d study --out runs/study --train-limit 64 -n 4 --max-steps 12 --loss dpo --loss flex`

    Many GPUs: `accelerate launch --num_processes 8 -m dpo3d study ...` (the cells train data parallel; the
    first process samples, judges and evaluates).
    """
    task = ctx.params["task"]
    if judge not in (None, "llm"):
        raise UsageError(f"--judge takes 'llm' (math-verify always runs), got '{judge}'")
    if judge == "llm" and not (base_url and judge_model):
        raise UsageError("--judge llm needs --base-url (an OpenAI-compatible endpoint) and --judge-model")
    if judge is None and (base_url or judge_model):
        raise UsageError("--base-url and --judge-model go with --judge llm")
    defaults = POEM_DEFAULTS if task == "poem" else MATH_DEFAULTS
    llm = None
    if judge == "llm":
        from dpo3d.judges.llm_judge import default_cache_path

        llm = LLMJudgeSettings(base_url=base_url, model=judge_model, api_key_env=api_key_env,
                               cache_path=str(default_cache_path()))
    config = STUDY.build(
        ctx.params, out=out, model=model, loop=t.loop_config(ctx.params, group=STUDY_LOOP),
        lora=t.lora_config(ctx.params), probe_responses=PROBE_RESPONSES.build(ctx.params), train_prompts=train_prompts or defaults[0],
        test_prompts=test_prompts or defaults[1], columns=columns, subset=subset, scenarios=_scenarios(scenario),
        losses=tuple(loss or (("dpo",) if task == "poem" else DEFAULT_LOSSES)), same_prompts=not all_prompts,
        loss_args=tuple(loss_args or ()), llm_judge=llm, math_workers=workers, device=device,
        load=options.load_options(dtype, trust_remote_code, allow_pickle=allow_pickle),
    )
    display = t.LiveDisplay(("loss", "accuracy", "probe_chosen_logp_delta", "probe_rejected_logp_delta",
                             "probe_unseen_logp_delta", "reward", "eval_accuracy"))
    with t.running(display, rerun_to_continue=out):
        study = run_study(config, _events(display))
    if study is None:  # a secondary process of accelerate launch: it trained, the first one reports
        return
    for table in summary_tables(study):
        console.print(table)
    console.print(f"[green]done[/]: {out}/study.md, study.json" + (", probes.png, fig4.png" if task == "math" else ""))


def _f(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def summary_tables(study: dict) -> list[Table]:
    """What study.md holds, on stderr: Table 1, Table 10 (math) or Table 3 (poem)."""
    if study.get("task") == "poem":
        table = Table(title="Table 3: poem rule metrics", title_justify="left")
        for header in ("model", "rows", "words", "rhythm", "tone", "title", "score"):
            table.add_column(header, justify="left" if header == "model" else "right")
        for row in study["table3"]:
            table.add_row(row["model"], *(_f(row[k]) for k in ("row_number", "words_per_row", "rhythm", "tone_pattern",
                                                               "title", "score")))
        return [table]
    t1 = Table(title="Table 1: per-token log-prob, before → after", title_justify="left")
    for header in ("scenario", "loss", "pairs", "updates", "passes", "chosen", "rejected"):
        t1.add_column(header)
    for row in study["table1"]:
        passes = row.get("passes")
        t1.add_row(str(row["scenario"]), row["loss"], str(row["pairs"]), str(row.get("updates", "—")),
                   "—" if passes is None else f"{passes:.2f}",
                   f"{_f(row['chosen_before'])} → {_f(row['chosen_after'])}",
                   f"{_f(row['rejected_before'])} → {_f(row['rejected_after'])}")
    t10 = study["table10"]
    tables = [t1, _accuracy_table("Tables 2/10: test accuracy, in-domain [95% interval]", t10["columns"], t10)]
    if t10.get("out_of_domain"):
        tables.append(_accuracy_table("Tables 2/10: test accuracy, out-of-domain [95% interval]", t10["columns"],
                                      t10["out_of_domain"]))
    return tables


def _accuracy_table(title: str, columns: list[str], grid: dict) -> Table:
    """Losses × scenarios of one test set, each accuracy with its Wilson interval."""
    table = Table(title=title, title_justify="left")
    table.add_column("loss")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row("start", *[interval_text(grid["start"], grid.get("start_interval"))] * len(columns))
    intervals = grid.get("intervals") or {}
    for name, row in grid["rows"].items():
        table.add_row(name, *(interval_text(row[c], intervals.get(name, {}).get(c)) for c in columns))
    return table
