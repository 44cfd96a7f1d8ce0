"""Judges: each scores candidate records and returns them with what it decided.

Every judge returns each input record unchanged but for three added fields:

- ``score``: a number, higher is better (``build-pairs`` ranks candidates by it);
- ``judge``: the judge's name (``"math"``, ...), so mixed files stay traceable;
- ``verdict``: the judge's raw decision as an object (for ``math``: the parsed
  prediction and gold, and whether they agree).

Judges of text import no torch: they run in pipelines on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..records import is_messages


def completion_text(completion: str | list | None) -> str:
    """The response text of a completion: a string, or the assistant turns of a messages list."""
    if isinstance(completion, str):
        return completion
    if is_messages(completion):
        turns = [m["content"] for m in completion if m.get("role") == "assistant"] or [completion[-1]["content"]]
        return "\n".join(turns)
    return ""


def scored(record: Mapping, judge: str, score: float, verdict: Mapping) -> dict:
    """The record with the judge's three fields added (replacing those of an earlier judge)."""
    return {**record, "score": score, "judge": judge, "verdict": dict(verdict)}
