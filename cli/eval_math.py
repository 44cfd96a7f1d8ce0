"""`dpo3d eval-math`: the paper's math evaluation (accuracy by level and subject, Table 2).

Generates greedy answers with one or more models (or reads existing completions),
judges them with the math judge, optionally asks an LLM judge for a 1-5 score, and
shows the models side by side. `eval-poem` shares the generation helpers here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import typer
from rich.table import Table

from dpo3d.data import datasets as ds
from dpo3d.data import records as rec
from dpo3d.judges import evaluation as ev
from dpo3d.judges.intervals import interval_text, wilson
from dpo3d.judges.math_judge import MathJudge, MathJudgeConfig, check_candidate

from . import options
from .common import UsageError, console, progress
from .config_file import CONFIG
from .datasets import prompt_source
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


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


# --------------------------------------------------------------------------- the command


def command(
    config: Path = CONFIG,
    model: list[str] = MODELS,
    completions: str = typer.Option(
        None, "--completions", "-c",
        help="Score existing completions instead of generating: records with **completion** and **answer** "
        f"(and id, prompt, source); {options.SOURCE_HELP}.",
    ),
    data: str = typer.Option(
        "math500", "--data", "-d",
        help=f"Problems: a built-in dataset ({', '.join(ds.BUILTINS)}), or prompt records from {options.SOURCE_HELP}.",
    ),
    columns: str = COLUMNS,
    subset: str = SUBSET,
    limit: int = LIMIT,
    n: int = N,
    temperature: float = TEMPERATURE,
    seed: int = SEED,
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Stop an answer after this many tokens."),
    batch_size: int = BATCH_SIZE,
    out: Path = OUT,
    summary: Path = SUMMARY,
    judge: str = options.JUDGE,
    base_url: str = options.BASE_URL,
    judge_model: str = options.JUDGE_MODEL,
    api_key_env: str = options.API_KEY_ENV,
    rubric: Path = typer.Option(None, "--rubric", help="The LLM judge's rubric template (default: the paper's 1-5 rubric); see `dpo3d judge llm --help`."),
    workers: int = options.workers(MathJudgeConfig.workers, options.MATH_WORKERS_HELP),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """Evaluate models on math problems: accuracy overall, by **level** and by **subject** (the paper's Table 2).

    Each **--model** answers every problem of **--data** (greedy, one answer each, unless **-n**/**--temperature**
    say otherwise); the math judge checks the final `\\boxed{}` answer against the gold one. With
    **--completions FILE** existing outputs (records with `completion` and `answer`, models told apart by
    `source`) are scored instead. **--judge llm** adds an LLM judge's 1-5 score (`llm_score`) and its share of
    5s and of 4-or-5s.

    The table (stderr) puts the models side by side; **--out** writes every judged answer, **--summary** the
    numbers as JSON.

    Example: `dpo3d eval-math --model smollm2-135m-instruct --model runs/dpo --data math500 --limit 100 --summary math.json`
    """
    if judge not in (None, "llm"):
        raise UsageError(f"--judge takes 'llm' (the math judge always runs), got '{judge}'")
    if judge is None and (base_url or judge_model):
        raise UsageError("--base-url and --judge-model go with --judge llm")
    if judge == "llm" and not (base_url and judge_model):
        raise UsageError("--judge llm needs --base-url (an OpenAI-compatible endpoint) and --judge-model")
    models = check_models(model, completions)
    costs: dict[str, dict] = {}
    if completions is not None:
        records, _, source = ev.read_completions(options.data_spec(completions, subset, columns), check_candidate)
        records = [{**record, "source": ev.model_of(record, source.stem)} for record in records]
        records = [records[i] for i in ev.first_problems(records, limit)]
    else:
        config = ev.eval_config(n, temperature, max_new_tokens, batch_size, seed)
        prompts = ds.load_prompts(prompt_source(data, subset, columns), limit=limit)
        if not prompts:
            raise UsageError(f"{data}: no problems to evaluate (--limit 0?)")
        for number, prompt in enumerate(prompts, start=1):
            check_candidate({"completion": "", **prompt}, str(data), number)
        records, costs = generate_all(models, prompts, config, dtype, device, trust_remote_code, allow_pickle)
    if judge == "llm" and any("prompt" not in record for record in records):
        raise UsageError("--judge llm needs each record's 'prompt' (the question the LLM judge reads)")

    # the judge's pool (if any) starts before the progress bar's thread does
    with MathJudge(MathJudgeConfig(workers=workers), size_hint=len(records)) as math_judge, progress() as bar:
        task = bar.add_task("judge math", total=len(records), rate="")
        judged = list(math_judge.judge(records, on_progress=lambda k: bar.advance(task, k)))
    if judge == "llm":
        judged = llm_scores(judged, base_url, judge_model, api_key_env, rubric)

    result = ev.math_summary(judged)
    if out is not None:
        rec.write_records(judged, out)
    if summary is not None:
        write_summary(summary, "math", completions or data, limit, None if completions is not None else config,
                      result, costs)
    console.print(math_table(result))
    print_costs(costs)


def llm_scores(records: list[dict], base_url: str, judge_model: str, api_key_env: str = "OPENAI_API_KEY",
               rubric: Path | None = None) -> list[dict]:
    """The records with the LLM judge's 1-5 score as ``llm_score`` (None where it gave none),
    its reply (``verdict.reply``) as ``llm_verdict`` and any failure (``verdict.error``) as
    ``llm_error``; the math judge's fields stay. Replies are cached where `dpo3d judge llm`
    caches them, so a rerun asks nothing again."""
    from dpo3d.judges.llm_judge import LLMJudge, LLMJudgeConfig, default_cache_path
    from dpo3d.judges.rubric import DEFAULT_RUBRIC, load_rubric

    with progress() as bar:
        task = bar.add_task(f"LLM judge {judge_model}", total=len(records), rate="")
        config = LLMJudgeConfig(base_url=base_url, model=judge_model, api_key_env=api_key_env,
                                rubric=load_rubric(rubric) if rubric else DEFAULT_RUBRIC, cache_path=default_cache_path())
        with LLMJudge(config) as judge:
            judged = list(judge.judge(records, on_progress=lambda k: bar.advance(task, k)))
    out = ev.with_llm_scores(records, judged)
    failed = sum("llm_error" in record for record in out)
    if failed:
        first = next(record["llm_error"] for record in out if "llm_error" in record)
        console.print(f"LLM judge: no score for {failed} of {len(out)} answers (first: {first})",
                      highlight=False, soft_wrap=True)
    return out


def math_table(result: Mapping) -> Table:
    """The models side by side: accuracy, no-answer share, by level, by subject, LLM shares."""
    models = result["models"]
    table = Table(title="eval-math: accuracy", title_justify="left")
    table.add_column("", style="bold")
    for label in models:
        table.add_column(label, justify="right")

    def row(name: str, cell) -> None:
        table.add_row(name, *(cell(summary) for summary in models.values()))

    def grouped(key: str, prefix: str) -> None:
        names: list[str] = []
        for summary in models.values():
            names += [name for name in summary[key] if name not in names]
        for name in names:
            row(f"{prefix}{name}", lambda s, name=name: _group_cell(s[key].get(name)))

    row("problems", lambda s: str(s["problems"]) + (f" × {s['completions'] // s['problems']}"
                                                     if s["completions"] != s["problems"] else ""))
    row("accuracy [95%]", lambda s: f"{interval_text(s['accuracy'], wilson(s['correct'], s['completions']))} "
                                    f"({s['correct']}/{s['completions']})")
    row("no answer", lambda s: percent(s["no_answer"]))
    grouped("by_level", "level ")
    grouped("by_subject", "")
    if any("llm" in s for s in models.values()):
        for key, label in (("share_5", "LLM judge: share 5"), ("share_4_or_5", "LLM judge: share 4–5")):
            row(label, lambda s, key=key: interval_text(s.get("llm", {}).get(key), s.get("llm", {}).get(f"{key}_interval")))
    return table


def _group_cell(group: Mapping | None) -> str:
    if group is None:
        return "—"
    return f"{group['accuracy']:.1%} ({group['correct']}/{group['count']})"
