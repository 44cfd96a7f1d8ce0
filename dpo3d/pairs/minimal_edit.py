"""Minimal-edit preference pairs: a reference solution against itself with a wrong final answer.

``chosen`` is a prompt record's worked solution (``reference``, or ``solution``) as it is;
``rejected`` is the same text with only the final answer replaced by a nearby wrong number.
The two share every token up to the answer, so DPO's likelihood displacement and degradation
can be studied on pairs whose only difference is the thing a judge checks, with no sampling.

The final answer is the *last* of ``\\boxed{N}`` (the built-ins' references end with
"The answer is $\\boxed{72}$.") or ``#### N`` (raw GSM8K), and only that span changes. Other
occurrences of the number, e.g. "48+24 = 72 clips" in the last step, are left alone on purpose:
one edited span keeps the shared prefix as long as it can be, and the rejected response is a
solution whose working is right but whose stated answer is not — the smallest wrong answer.

The new answer is the true one plus or minus ``k`` (1 ≤ k ≤ ``max_shift``), drawn from
``(seed, record id)``: the same seed gives the same edit whatever other records come along.
It keeps the answer's format — decimal places, thousands separators — and its sign (a shift
that would cross zero goes the other way), and is never the true answer. Records with no
solution, no locatable answer, an answer that is not a plain number, or a located answer
other than the record's ``answer`` are skipped with their reason, never guessed at.
No torch here.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from dpo3d.data.prompting import boxed_spans

#: why a record gives no pair (the keys of EditStats.skipped)
NO_SOLUTION = "no reference solution"
NO_ANSWER = "no final answer (\\boxed{} or ####) in the solution"
NOT_A_NUMBER = "the final answer is not a plain number"
MISMATCH = "the solution's final answer differs from the record's answer"

#: where a record's worked solution is, in order of preference
SOLUTION_KEYS = ("reference", "solution")

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_HASHES = re.compile(r"####[ \t]*(\S+)")


@dataclass(frozen=True)
class MinimalEditConfig:
    seed: int = 0  # with the record's id, picks each edit
    max_shift: int = 9  # the wrong answer is the true one ± k, 1 ≤ k ≤ max_shift

    def __post_init__(self) -> None:
        if self.max_shift < 1:
            raise ValueError(f"max_shift (--max-shift) must be at least 1, got {self.max_shift}")


@dataclass(frozen=True)
class AnswerSpan:
    start: int
    end: int
    text: str


@dataclass
class EditStats:
    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> records


class Skipped(Exception):
    """A record that gives no minimal-edit pair; ``reason`` is one of this module's reasons."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _last_boxed(text: str) -> AnswerSpan | None:
    """The argument of the last ``\\boxed{...}`` (or ``\\fbox``, ``\\boxed 5``), as the math judge reads it."""
    spans = boxed_spans(text)
    if not spans:
        return None  # none, or never closed: no answer we can trust
    start, end, content = spans[-1]
    opening = text.find("{", start, end)
    if opening < 0:  # `\boxed 5`: the argument is the token that ends the span
        return AnswerSpan(end - len(content), end, content)
    return AnswerSpan(opening + 1, end - 1, text[opening + 1 : end - 1])


def _last_hashes(text: str) -> AnswerSpan | None:
    matches = list(_HASHES.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return AnswerSpan(last.start(1), last.end(1), last.group(1))


def locate_answer(solution: str) -> AnswerSpan | None:
    """The final answer's span: the later of the last ``\\boxed{...}`` and the last ``#### ...``."""
    spans = [span for span in (_last_boxed(solution), _last_hashes(solution)) if span is not None]
    return max(spans, key=lambda span: span.start) if spans else None


def _value(text: str) -> Decimal | None:
    text = text.strip()
    return Decimal(text.replace(",", "")) if _NUMBER.fullmatch(text) else None


def _format_like(value: Decimal, like: str) -> str:
    places = len(like.partition(".")[2])
    return f"{value:{',' if ',' in like else ''}.{places}f}"


def wrong_answer(answer: str, key: str, config: MinimalEditConfig) -> str:
    """``answer`` (a plain number) moved by ± k, in its own format and sign; ``key`` seeds the draw."""
    true = _value(answer)
    if true is None:
        raise ValueError(f"not a plain number: {answer!r}")
    draw = random.Random(f"minimal-edit:{config.seed}:{key}")
    shift = draw.randint(1, config.max_shift) * draw.choice((1, -1))
    edited = true + shift
    if (edited < 0) != (true < 0):  # crossing zero would change the sign
        edited = true - shift
    return _format_like(edited, answer.strip())


def _solution(record: dict) -> str | None:
    for key in SOLUTION_KEYS:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key]
    return None


def minimal_edit_pair(record: dict, config: MinimalEditConfig = MinimalEditConfig()) -> dict:
    """The pair of one prompt record: its fields plus ``chosen`` (the solution), ``rejected``,
    ``answer``, ``edited_answer`` and ``answer_span`` ([start, end) of the answer in ``chosen``).

    Raises :class:`Skipped` with the reason when the record gives no pair.
    """
    solution = _solution(record)
    if solution is None:
        raise Skipped(NO_SOLUTION)
    span = locate_answer(solution)
    if span is None:
        raise Skipped(NO_ANSWER)
    value = _value(span.text)
    if value is None:
        raise Skipped(NOT_A_NUMBER)
    answer = record.get("answer")
    if answer is not None and _value(str(answer)) != value:
        raise Skipped(MISMATCH)
    # the span may carry spaces inside \boxed{ 72 }: edit the number itself
    offset = len(span.text) - len(span.text.lstrip())
    start, end = span.start + offset, span.start + offset + len(span.text.strip())
    edited = wrong_answer(solution[start:end], str(record.get("id", solution)), config)
    return {
        **record,
        "chosen": solution,
        "rejected": solution[:start] + edited + solution[end:],
        "answer": str(answer) if answer is not None else solution[start:end],
        "edited_answer": edited,
        "answer_span": [start, end],
    }


def build_edit_pairs(records: Iterable[dict], config: MinimalEditConfig = MinimalEditConfig()) -> tuple[list[dict], EditStats]:
    """Every record's minimal-edit pair, in input order, and the tally of what was skipped and why."""
    stats = EditStats()
    pairs = []
    for record in records:
        stats.read += 1
        try:
            pairs.append(minimal_edit_pair(record, config))
        except Skipped as skipped:
            stats.skipped[skipped.reason] += 1
    stats.kept = len(pairs)
    return pairs, stats
