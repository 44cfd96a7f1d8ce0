"""`dpo3d judge ...`: score candidates. One sub-command per judge (`llm` in judge_llm.py).

Every judge runs through :func:`run_judge`: its input (any source :mod:`dpo3d.data.inputs` reads)
is checked and judged as it streams, and written back with `score`, `judge` and `verdict`
added, ready for `dpo3d build-pairs`.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import typer

from dpo3d.data import inputs
from dpo3d.data import records as rec
from dpo3d.judges.base import Judge, size_hint
from dpo3d.judges.math_judge import MathJudge, MathJudgeConfig

from . import options
from .common import console, progress
from .config_file import CONFIG

app = typer.Typer(
    help="Score candidate completions (adds score, judge and the judge's details as verdict). `dpo3d judge JUDGE --help` for each.",
    no_args_is_help=True,
)

INPUT = typer.Argument("-", help=f"Candidates, e.g. the output of `dpo3d sample`: {options.SOURCE_HELP}.")


def run_judge(judge: Judge, data: str, out: Path, subset: str | None = None, columns: str | None = None) -> None:
    """Judge every record of ``data`` and write them to ``out``: the one loop of every judge.

    Records are checked (``judge.check``) and judged as they are read; a bad one stops the run
    with its file and line (or row), exit 2, and an ``out`` file (written atomically) is left
    untouched. On stdout the records judged before it have gone down the pipe already (a short
    input is read ahead whole, so there nothing has): the exit status says the run failed.
    """
    source = inputs.open_source(options.data_spec(data, subset, columns))
    records, size = size_hint(inputs.stream(source, judge.check), source.size, judge.size_probe)
    # opened before the progress bar: a judge's worker processes fork before the bar's thread starts
    with closing(judge.open(size)), progress() as bar:
        task = bar.add_task(f"judge {judge.name}", total=size, rate="")
        try:
            rec.write_records(judge.judge(records, on_progress=lambda n: bar.advance(task, n)), out)
        except BaseException:
            bar.update(task, visible=False)  # a bad record's one line alone says what happened
            raise
    console.print(judge.summary(), highlight=False, soft_wrap=True)


@app.command("math")
def math_command(
    config: Path = CONFIG,
    data: str = INPUT,
    out: Path = options.OUT,
    lenient: bool = typer.Option(
        MathJudgeConfig.lenient, "--lenient/--no-lenient",
        help="Without a \\boxed{} or 'the answer is', take the text's last expression.",
    ),
    workers: int = options.workers(MathJudgeConfig.workers, options.MATH_WORKERS_HELP),
    timeout: float = typer.Option(
        MathJudgeConfig.timeout_s, "--timeout", min=1.0,
        help="Seconds allowed to parse or compare one answer (math-verify's alarm counts whole seconds: a fraction rounds up).",
    ),
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
) -> None:
    """Check each completion's final answer against the record's **answer** with math-verify.

    Needs **completion** and **answer** (records from `dpo3d datasets`/`sample` carry it).
    The answer is the completion's last \\boxed{} (or "the answer is ..."); values are compared,
    not strings: \\frac{1}{2} = 0.5 = 1/2, 1,080 = 1080, (0,1] is an interval, \\text{(C)} = C.
    Adds **score** (1 right, 0 not), **correct**, **judge** ("math") and
    **verdict** {correct, status, pred, gold}; status is correct, wrong, no_answer or timeout.

    Example: `dpo3d sample --prompts math500 -n 8 | dpo3d judge math | dpo3d build-pairs -o pairs.jsonl`
    """
    run_judge(MathJudge(MathJudgeConfig(lenient=lenient, timeout_s=timeout, workers=workers)), data, out, subset, columns)


@app.command("rm")
def rm_command(
    config: Path = CONFIG,
    data: str = INPUT,
    out: Path = options.OUT,
    rm: str = typer.Option(..., "--rm", help="A reward model folder written by `dpo3d train-rm`."),
    batch_size: int = options.BATCH_SIZE,
    max_length: int = options.MAX_LENGTH,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
) -> None:
    """Score each (prompt, completion) with a trained reward model: **score** is its reward r(x, y).

    Adds **score**, **judge** ("rm:NAME") and **verdict** {reward}. Rewards are unbounded
    reals; only their order matters to `build-pairs`.

    Example: `dpo3d sample --prompts gsm8k:train --limit 50 -n 8 | dpo3d judge rm --rm runs/rm | dpo3d build-pairs -o pairs.jsonl`
    """
    from dpo3d.judges.reward import RewardModelJudge

    with console.status(f"loading {rm}"):
        judge = RewardModelJudge.load(rm, options.load_options(dtype, trust_remote_code, allow_pickle=allow_pickle), device,
                                      max_length=max_length, batch_size=batch_size)
    run_judge(judge, data, out, subset, columns)


@app.command("poem")
def poem_command(
    config: Path = CONFIG,
    data: str = INPUT, out: Path = options.OUT, columns: str = options.COLUMNS, subset: str = options.SUBSET
) -> None:
    """Score poems by the paper's rules: the mean of Row Number, Words per Row, Rhythm, Tone Pattern, Title.

    Each record needs **completion** and the prompt's constraints: **form** (wujue, qijue,
    wulv, qilv, ci with **tune**, or haiku, limerick, quatrain), optional **title** and
    **language** — the records of data/poems/*.jsonl carry them. Adds **score** (the mean of the
    metrics that apply), **judge** ("poem") and **verdict** (each metric in [0, 1]);
    `dpo3d eval-poem` reports the same numbers.

    Example: `dpo3d sample --prompts data/poems/english_test.jsonl -n 4 | dpo3d judge poem | dpo3d build-pairs -o pairs.jsonl`
    """
    from dpo3d.judges.rules import poem_judge

    run_judge(poem_judge(), data, out, subset, columns)


@app.command("slogan")
def slogan_command(
    config: Path = CONFIG,
    data: str = INPUT, out: Path = options.OUT, columns: str = options.COLUMNS, subset: str = options.SUBSET
) -> None:
    """Score slogans by the paper's rules: the mean of Word Count and Content.

    Each record needs **completion**, **language** (zh counts characters, en words), the
    asked length (**min_length**, **length**), the **subject** (and **keywords** that also
    name it) and the **banned** words — data/slogans/*.jsonl carry them. Content is 1 when the
    slogan names the subject, uses no banned word and does not copy the prompt.

    Example: `dpo3d sample --prompts data/slogans/test.jsonl -n 4 | dpo3d judge slogan | dpo3d build-pairs -o pairs.jsonl`
    """
    from dpo3d.judges.rules import slogan_judge

    run_judge(slogan_judge(), data, out, subset, columns)


from .judge_llm import llm_command  # noqa: E402  (its module reads run_judge from here)

app.command("llm")(llm_command)
