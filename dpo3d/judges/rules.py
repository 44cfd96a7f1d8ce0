"""The rule judges: the paper's poem and slogan metrics (:mod:`dpo3d.poetry`) as judges.

Each record carries its prompt's constraints (a poem's ``form``, ``title``, ``tune``; a
slogan's ``length``, ``subject``, ``banned``, ...) and a ``completion``; ``score`` is the mean
of the metrics that apply and ``verdict`` holds each of them in [0, 1]. Records are judged one
at a time, as they are read. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from dpo3d.data.formats import as_completion
from dpo3d.data.records import RecordError

from . import scored
from .base import Judge, Progress, ScoreTally

ScoreFn = Callable[[Mapping, Any], dict]


class RuleJudge(Judge):
    """Scores each completion with ``score_fn(record, completion) -> {metric: value, ..., "score"}``."""

    def __init__(self, name: str, score_fn: ScoreFn):
        self.name = name
        self.score_fn = score_fn
        self.tally = ScoreTally()

    def check(self, record: dict, source: str = "<input>", position: int | None = None) -> dict:
        """A prompt and completion, and constraints the rules can read (a known form, a ci's tune, ...)."""
        record = as_completion(record, source, position)
        try:
            # the rules refuse a record for its constraints, never for its completion's text:
            # scoring an empty completion finds every such problem at the cost of no real work
            self.score_fn(record, "")
        except ValueError as err:
            raise RecordError(source, position, str(err)) from None
        return record

    def judge(self, records: Iterable[Mapping], on_progress: Progress | None = None) -> Iterator[dict]:
        self.tally = ScoreTally()
        for record in records:
            metrics = self.score_fn(record, record["completion"])
            self.tally.add(metrics["score"])
            yield scored(record, self.name, metrics["score"], metrics)
            if on_progress is not None:
                on_progress(1)

    def summary(self) -> str:
        """``judge poem: 4 scored, mean 0.812, full marks 1``."""
        mean = self.tally.mean
        shown = f"{mean:.3f}" if mean is not None else "n/a"
        return f"judge {self.name}: {self.tally.count} scored, mean {shown}, full marks {self.tally.full}"


def poem_judge() -> RuleJudge:
    """Row Number, Words per Row, Rhythm, Tone Pattern and Title (see :func:`dpo3d.poetry.score_poem`)."""
    from ..poetry import score_poem

    return RuleJudge("poem", score_poem)


def slogan_judge() -> RuleJudge:
    """Word Count and Content (see :func:`dpo3d.poetry.score_slogan`)."""
    from ..poetry import score_slogan

    return RuleJudge("slogan", score_slogan)
