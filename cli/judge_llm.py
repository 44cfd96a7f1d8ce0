"""`dpo3d judge llm`: grade candidates with a chat model behind an OpenAI-compatible endpoint.

Registered in cli/judge.py as ``app.command("llm")(llm_command)``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.judges.llm_judge import LLMJudge, LLMJudgeConfig, default_cache_path
from dpo3d.judges.rubric import DEFAULT_RUBRIC, load_rubric

from . import options
from .common import UsageError
from .config_file import CONFIG
from .config_options import OptionGroup, with_options
from .renamed import Renamed, renamed

INPUT = typer.Argument("-", help=f"Candidates, e.g. the output of `dpo3d sample`: {options.SOURCE_HELP}.")
#: the judge's settings declared with their help in LLMJudgeConfig (--max-wait, --cache-wait)
JUDGE = OptionGroup(LLMJudgeConfig)


@renamed(Renamed("-j", "concurrency", "--concurrency", why="-j is --workers, worker processes, in every command"))
@with_options(JUDGE)
def llm_command(
    ctx: typer.Context,
    config: Path = CONFIG,
    data: str = INPUT,
    out: Path = options.OUT,
    base_url: str = typer.Option(
        ..., "--base-url", envvar="DPO3D_JUDGE_BASE_URL", help="The endpoint, e.g. http://localhost:8000/v1."
    ),
    judge_model: str = typer.Option(
        ...,
        "--judge-model",
        envvar="DPO3D_JUDGE_MODEL",
        help="The judge's model name, as the endpoint knows it.",
    ),
    api_key_env: str = options.API_KEY_ENV,
    rubric: Path = typer.Option(
        None,
        "--rubric",
        help="Rubric prompt template with {question} and {response} (and optionally {reference}); "
        "default: the paper's 1-5 rubric.",
    ),
    concurrency: int = typer.Option(LLMJudgeConfig.concurrency, "--concurrency", min=1, help="Requests in flight at once."),
    max_retries: int = typer.Option(
        LLMJudgeConfig.max_retries, "--max-retries", min=0, help="Tries after the first on transient errors (connection, 429, 5xx)."
    ),
    timeout: float = typer.Option(LLMJudgeConfig.timeout_s, "--timeout", min=0.001, help="Seconds allowed for one request."),
    max_tokens: int = typer.Option(LLMJudgeConfig.max_tokens, "--max-tokens", min=1, help="Longest reply, in tokens."),
    cache: Path = typer.Option(
        None,
        "--cache",
        help="Reply cache (SQLite). Default: $DPO3D_CACHE/llm_judge.sqlite or ~/.cache/dpo3d/.",
    ),
    use_cache: bool = typer.Option(True, "--use-cache/--no-cache", help="Read and write the reply cache (--no-cache: neither)."),
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
) -> None:
    """Grade each completion 1-5 with a chat model behind any OpenAI-compatible endpoint.

    Needs **prompt** and **completion** (strings or chat messages; or a TRL **messages**
    conversation, whose last assistant turn is graded); a **reference** or **answer** field,
    when present, is shown to the judge as the reference final answer.
    The default rubric is the paper's: 5 right answer with a sound, complete process ... 1 all wrong.
    Adds **score** (1.0-5.0, or null when the reply has no score), **judge** (`llm:MODEL`) and
    **verdict** {reply, error}: the raw reply, and only on failure what went wrong
    (`build-pairs` leaves such candidates out).

    Transient errors (connection, timeout, 429, 5xx) are retried with back-off, a server's
    Retry-After honoured up to `--max-wait` seconds; replies that carry a score are cached, so a
    rerun with the same inputs asks only for the others. A corrupt cache is started afresh with a
    warning; one locked by another run is waited for `--cache-wait` seconds. The key is read from
    the variable named by `--api-key-env` and is never written anywhere (a reply or an error that
    quotes it shows `***`).

    Example: `dpo3d sample --prompts math500 -n 4 | dpo3d judge llm --base-url http://localhost:8000/v1
    --judge-model Qwen/Qwen2.5-7B-Instruct -o judged.jsonl`
    """
    if cache is not None and not use_cache:
        raise UsageError("--cache and --no-cache contradict each other: pick one")
    rubric_text = load_rubric(rubric) if rubric is not None else DEFAULT_RUBRIC
    config = LLMJudgeConfig(
        base_url=base_url,
        model=judge_model,
        api_key_env=api_key_env,
        rubric=rubric_text,
        max_tokens=max_tokens,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout_s=timeout,
        cache_path=None if not use_cache else (cache if cache is not None else default_cache_path()),
        **JUDGE.values(ctx.params),
    )
    # local import: run_judge lives in judge.py, which imports this module to register the command
    from .judge import run_judge

    run_judge(LLMJudge(config), data, out, subset, columns)
