"""`dpo3d judge ...`: score candidates. One sub-command per judge; `math` lives here.

Each judge reads candidate JSONL (a file or stdin) and writes it back with
`score`, `judge` and `verdict` added, ready for `dpo3d build-pairs`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from dpo3d import records as rec
from dpo3d.judges import scored
from dpo3d.judges.math_judge import MathJudge, MathJudgeConfig, check_candidate
from dpo3d.records import is_text

from . import options
from .common import console, progress, user_errors

app = typer.Typer(
    help="Score candidate completions (adds score, judge and the judge's verdict: `verdict`, or `judge_verdict` for llm). `dpo3d judge JUDGE --help` for each.",
    no_args_is_help=True,
)

INPUT = typer.Argument(Path("-"), help="Candidates JSONL ('-' = stdin), e.g. the output of `dpo3d sample`.")


def read_checked(path: Path, check) -> list[dict]:
    """Every record of ``path``, each passed through ``check(record, source, line)``."""
    name = "<stdin>" if str(path) == rec.STDIO else str(path)
    records = []
    for line, record in rec.iter_records(path):
        check(record, name, line)
        records.append(record)
    if not records:
        raise rec.RecordError(name, None, "empty input: no records")
    return records


@app.command("math")
@user_errors
def math_command(
    data: Path = INPUT,
    out: Path = options.OUT,
    lenient: bool = typer.Option(
        False, "--lenient", help="Without a \\boxed{} or 'the answer is', take the text's last expression."
    ),
    workers: int = typer.Option(None, "--workers", "-j", min=0, help="Worker processes (default: one per CPU; 0: none)."),
    timeout: int = typer.Option(5, "--timeout", min=1, help="Seconds allowed to parse or compare one answer."),
) -> None:
    """Check each completion's final answer against the record's **answer** with math-verify.

    Needs **completion** and **answer** (records from `dpo3d datasets`/`sample` carry it).
    The answer is the completion's last \\boxed{} (or "the answer is ..."); values are compared,
    not strings: \\frac{1}{2} = 0.5 = 1/2, 1,080 = 1080, (0,1] is an interval, \\text{(C)} = C.
    Adds **score** (1 right, 0 not), **correct**, **judge** ("math") and
    **verdict** {correct, status, pred, gold}; status is correct, wrong, no_answer or timeout.

    Example: `dpo3d sample --prompts math500 -n 8 | dpo3d judge math | dpo3d build-pairs -o pairs.jsonl`
    """
    config = MathJudgeConfig(lenient=lenient, timeout_s=timeout, workers=workers)
    records = read_checked(data, check_candidate)
    # the pool starts (forks) before the progress bar's thread does
    with MathJudge(config, size_hint=len(records)) as judge, progress() as bar:
        task = bar.add_task("judge math", total=len(records), rate="")
        judged = list(judge.judge(records, on_progress=lambda n: bar.advance(task, n)))
    rec.write_records(judged, out)
    statuses = Counter(record["verdict"]["status"] for record in judged)
    right = statuses.get("correct", 0)
    details = ", ".join(f"{status} {count}" for status, count in statuses.most_common())
    console.print(f"judge math: {right}/{len(judged)} right ({right / len(judged):.1%}); {details}", highlight=False)


def check_completion(record: dict, source: str, line: int) -> None:
    for key in ("prompt", "completion"):
        if not is_text(record.get(key)):
            raise rec.RecordError(source, line, f"field '{key}' should be a string or a list of chat messages")


@app.command("rm")
@user_errors
def rm_command(
    data: Path = INPUT,
    out: Path = options.OUT,
    rm: str = typer.Option(..., "--rm", help="A reward model folder written by `dpo3d train-rm`."),
    batch_size: int = options.BATCH_SIZE,
    max_length: int = options.MAX_LENGTH,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Score each (prompt, completion) with a trained reward model: **score** is its reward r(x, y).

    Adds **score**, **judge** ("rm:NAME") and **verdict** {reward}. Rewards are unbounded
    reals; only their order matters to `build-pairs`.

    Example: `dpo3d sample --prompts gsm8k:train --limit 50 -n 8 | dpo3d judge rm --rm runs/rm | dpo3d build-pairs -o pairs.jsonl`
    """
    from dpo3d.models import display_name, pick_device
    from dpo3d.reward_model import is_reward_model, load_reward_model, reward_of_records

    if not is_reward_model(rm):
        raise ValueError(f"--rm {rm}: not a reward-model folder (a sequence-classification model); train one with `dpo3d train-rm`")
    records = read_checked(data, check_completion)
    with console.status(f"loading {rm}"):
        model, tokenizer = load_reward_model(rm, options.load_options(dtype, trust_remote_code))
        model.to(pick_device(device))
    with progress() as bar:
        task = bar.add_task("judge rm", total=len(records), rate="")
        rewards = reward_of_records(model, tokenizer, records, max_length, batch_size, lambda n: bar.advance(task, n))
    name = f"rm:{display_name(rm)}"
    rec.write_records((scored(r, name, reward, {"reward": reward}) for r, reward in zip(records, rewards, strict=True)), out)
    mean = sum(rewards) / len(rewards)
    console.print(f"judge rm: {len(rewards)} scored, reward mean {mean:.3f}, min {min(rewards):.3f}, max {max(rewards):.3f}")


def _rule_judge(data: Path, out: Path, name: str, score_fn) -> None:
    """Score every record with a rule function ``score_fn(record, completion) -> {metric: value, score}``."""
    judged = []

    def check_and_score(record: dict, source: str, line: int) -> None:
        check_completion(record, source, line)
        try:  # a record the rules cannot read (unknown form, ci without tune) is bad input on its line
            metrics = score_fn(record, record["completion"])
        except ValueError as err:
            raise rec.RecordError(source, line, str(err)) from None
        judged.append(scored(record, name, metrics["score"], metrics))

    read_checked(data, check_and_score)
    rec.write_records(judged, out)
    mean = sum(r["score"] for r in judged) / len(judged)
    full = sum(1 for r in judged if r["score"] >= 1.0)
    console.print(f"judge {name}: {len(judged)} scored, mean {mean:.3f}, full marks {full}", highlight=False)


@app.command("poem")
@user_errors
def poem_command(data: Path = INPUT, out: Path = options.OUT) -> None:
    """Score poems by the paper's rules: the mean of Row Number, Words per Row, Rhythm, Tone Pattern, Title.

    Each record needs **completion** and the prompt's constraints: **form** (wujue, qijue,
    wulv, qilv, ci with **tune**, or haiku, limerick, quatrain), optional **title** and
    **language** — the records of data/poems/*.jsonl carry them. Adds **score** (the mean of the
    metrics that apply), **judge** ("poem") and **verdict** (each metric in [0, 1]);
    `dpo3d eval-poem` reports the same numbers.

    Example: `dpo3d sample --prompts data/poems/english_test.jsonl -n 4 | dpo3d judge poem | dpo3d build-pairs -o pairs.jsonl`
    """
    from dpo3d.poetry import score_poem

    _rule_judge(data, out, "poem", score_poem)


@app.command("slogan")
@user_errors
def slogan_command(data: Path = INPUT, out: Path = options.OUT) -> None:
    """Score slogans by the paper's rules: the mean of Word Count and Content.

    Each record needs **completion**, **language** (zh counts characters, en words), the
    asked length (**min_length**, **length**), the **subject** (and **keywords** that also
    name it) and the **banned** words — data/slogans/*.jsonl carry them. Content is 1 when the
    slogan names the subject, uses no banned word and does not copy the prompt.

    Example: `dpo3d sample --prompts data/slogans/test.jsonl -n 4 | dpo3d judge slogan | dpo3d build-pairs -o pairs.jsonl`
    """
    from dpo3d.poetry import score_slogan

    _rule_judge(data, out, "slogan", score_slogan)


from .judge_llm import llm_command  # noqa: E402  (its module reads read_checked from here)

app.command("llm")(llm_command)
