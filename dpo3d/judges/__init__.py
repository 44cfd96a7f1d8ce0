"""Judges: each scores candidate records and returns them with what it decided.

Every judge returns each input record unchanged but for three added fields:

- ``score``: a number, higher is better (``build-pairs`` ranks candidates by it);
- ``judge``: the judge's name (``"math"``, ...), so mixed files stay traceable;
- ``verdict``: the judge's details as an object (for ``math``: the parsed
  prediction and gold, and whether they agree; for ``llm``: ``{reply, error?}``, ``error``
  only when it could not score; for ``rm``: ``{reward}``; for ``poem``/``slogan``: each metric).

They share one interface, :class:`~dpo3d.judges.base.Judge` (check a record, judge a stream of
records, summarise): :mod:`.math_judge`, :mod:`.llm_judge`, :mod:`.rules` (poem, slogan) and
:mod:`.reward` (a trained reward model; the only judge that needs torch, imported when it loads).
Judges of text import no torch: they run in pipelines on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping

from dpo3d.data.schema import message_text

from .base import Judge  # noqa: F401  (the interface, importable as dpo3d.judges.Judge)


def completion_text(completion: str | list | None) -> str:
    """The response text of a completion: a string, or the assistant turns of a messages list."""
    try:
        return message_text(completion, role="assistant")
    except ValueError:
        return ""


def scored(record: Mapping, judge: str, score: float, verdict: Mapping) -> dict:
    """The record with the judge's three fields added (replacing those of an earlier judge)."""
    return {**record, "score": score, "judge": judge, "verdict": dict(verdict)}


def judge_failed(record: Mapping) -> bool:
    """Whether the record's judge could not score it: ``score`` null and an ``error`` in its ``verdict``."""
    verdict = record.get("verdict")
    return record.get("score") is None and isinstance(verdict, Mapping) and bool(verdict.get("error"))
