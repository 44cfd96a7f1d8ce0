"""`dpo3d judge ...`: score candidates. One sub-command per judge; `math` lives here.

Each judge reads candidate JSONL (a file or stdin) and writes it back with
`score`, `judge` and `verdict` added, ready for `dpo3d build-pairs`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from dpo3d import records as rec
from dpo3d.judges.math_judge import MathJudge, MathJudgeConfig, check_candidate

from . import options
from .common import console, progress, user_errors

app = typer.Typer(
    help="Score candidate completions (adds score, judge, verdict). `dpo3d judge JUDGE --help` for each.",
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
    """Check each completion's final answer against the record's [bold]answer[/] with math-verify.

    Needs [bold]completion[/] and [bold]answer[/] (records from `dpo3d datasets`/`sample` carry it).
    The answer is the completion's last \\boxed{} (or "the answer is ..."); values are compared,
    not strings: \\frac{1}{2} = 0.5 = 1/2, 1,080 = 1080, (0,1] is an interval, \\text{(C)} = C.
    Adds [bold]score[/] (1 right, 0 not), [bold]correct[/], [bold]judge[/] ("math") and
    [bold]verdict[/] {correct, status, pred, gold}; status is correct, wrong, no_answer or timeout.

    Example: dpo3d sample --prompts math500 -n 8 | dpo3d judge math | dpo3d build-pairs -o pairs.jsonl
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
