"""The one interface every judge implements (math, llm, rm, poem, slogan).

A judge is used in three steps, the same for all of them::

    records = inputs.stream(source, judge.check)        # each record checked as it is read
    with closing(judge.open(size_hint)) as judge:       # or `with judge:` (no hint)
        for record in judge.judge(records, on_progress):
            ...                                         # score, judge and verdict added
    print(judge.summary())

- ``check(record, source, position)`` has the input layer's check signature: it raises
  :class:`~dpo3d.data.records.RecordError` for a record this judge cannot read, naming the file and
  line (or row), and may return a replacement record (a TRL ``messages`` row as prompt/completion).
- ``judge(records, on_progress)`` streams: it reads records only as far as the batch it works on
  (the math judge's chunks for its worker pool, the LLM judge's window of requests in flight, the
  reward model's length-sorted chunks, the rule judges one at a time) and yields each record, in
  input order, with ``score``, ``judge`` and ``verdict`` added. ``on_progress(n)`` is called after
  ``n`` more records are judged.
- ``open(size_hint)`` takes what the judge holds (worker processes, a reply cache); ``close()``
  gives it back. Open before starting threads of your own (a progress bar): worker processes fork.
- ``summary()``: one line for a person on what the last ``judge()`` call decided.

No torch here, and none in the judges of text.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

Progress = Callable[[int], None]


class Judge(ABC):
    """A judge of candidate records; see the module docstring for the protocol."""

    #: how the judge labels what it scores (the records' ``judge`` field)
    name: str = "judge"

    #: records read ahead when a source does not know its size (see :func:`size_hint`): a short
    #: input is then counted (a progress total; the math judge skips its pool for it) and checked
    #: whole before the first record is judged
    size_probe: int = 64

    def check(self, record: dict, source: str = "<input>", position: int | None = None) -> dict | None:
        """Raise RecordError unless this judge can read ``record``; may return a replacement."""
        return None

    @abstractmethod
    def judge(self, records: Iterable[Mapping], on_progress: Progress | None = None) -> Iterator[dict]:
        """Each checked record with ``score``, ``judge`` and ``verdict`` added, in input order."""

    def summary(self) -> str:
        """One line on what the last :meth:`judge` call decided."""
        return f"judge {self.name}: done"

    def open(self, size_hint: int | None = None) -> Judge:
        """Take what the judge needs (``size_hint``: how many records will come, when known)."""
        return self

    def close(self) -> None:  # noqa: B027  (most judges hold nothing: closing them does nothing)
        """Give back what :meth:`open` took."""

    def __enter__(self) -> Judge:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def size_hint(records: Iterable, known: int | None, probe: int) -> tuple[Iterator, int | None]:
    """``(the same records, how many there are)``: ``known`` when the source knows it, else the
    count when the records run out within the first ``probe`` (which are read ahead), else None."""
    iterator = iter(records)
    if known is not None or probe <= 0:
        return iterator, known
    head = list(itertools.islice(iterator, probe + 1))
    count = len(head) if len(head) <= probe else None
    return itertools.chain(head, iterator), count


@dataclass
class ScoreTally:
    """Running count, mean, range and full marks of the scores a judge gave (null scores skipped)."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    full: int = 0  # scores of at least 1.0 (a rule judge's full marks)

    def add(self, score: float | None) -> None:
        if score is None:
            return
        self.count += 1
        self.total += score
        self.low = min(self.low, score)
        self.high = max(self.high, score)
        self.full += score >= 1.0

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None
