"""The LLM judge's words: the paper's 1-5 rubric, the prompt built from a record, and the reply parsed.

Pure text, no client: :mod:`dpo3d.judges.llm_judge` sends what :func:`judge_messages`
builds and reads the score back with :func:`parse_score`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpo3d.data.schema import message_text

from . import completion_text

REQUIRED_PLACEHOLDERS = ("{question}", "{response}")

#: the paper's rubric (App. C), for questions with a final answer
DEFAULT_RUBRIC = """\
You are grading an answer to a question. Rate it on a scale of 1 to 5:

5 - The final answer is correct and the working that leads to it is correct and complete.
4 - The final answer is correct, but the working is missing (on a hard question) or much \
longer than needed (on an easy one).
3 - The final answer is wrong but the working is mostly right, or the final answer is \
right but the working contains clear errors.
2 - The final answer is wrong and most of the working is wrong too.
1 - Everything is wrong, or there is no final answer at all.

[Question]
{question}

[Reference solution (or final answer)]
{reference}

[Answer to grade]
{response}

Give a brief justification, then end with a line of the form "Score: N", where N is 1, 2, 3, 4 or 5.
"""

NO_REFERENCE = "(none given: judge the answer on its own merits)"


def check_rubric(text: str, source: str = "the rubric") -> str:
    """Return ``text`` if it has the placeholders a rubric needs, else raise ValueError."""
    if not text.strip():
        raise ValueError(f"{source} is empty")
    missing = [p for p in REQUIRED_PLACEHOLDERS if p not in text]
    if missing:
        raise ValueError(
            f"{source} lacks the placeholder(s) {', '.join(missing)}: a rubric needs {{question}} and "
            "{response} (and may use {reference}, the record's reference answer)"
        )
    return text


def load_rubric(path: str | os.PathLike) -> str:
    """Read a rubric template from a file (UTF-8) and check its placeholders."""
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"rubric file not found: {target}")
    try:
        text = target.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"rubric file {target} is not valid UTF-8") from None
    return check_rubric(text, f"rubric file {target}")


def render_rubric(rubric: str, question: str, response: str, reference: str | None) -> str:
    """Fill the placeholders (plain replacement: other braces in the rubric stay as written)."""
    values = {"{question}": question, "{response}": response, "{reference}": reference or NO_REFERENCE}
    pattern = re.compile("|".join(re.escape(key) for key in values))
    # one pass, so a placeholder inside the question or the response is not replaced again
    return pattern.sub(lambda m: values[m.group(0)], rubric)


# --------------------------------------------------------------------------- parsing the reply

_NUMBER = r"(\d+(?:\.\d+)?)"
_OUT_OF = r"(?:\s*(?:/|out\s+of)\s*(\d+))?"
#: "Score: 4", "**Rating:** 5/5", '"score": 2', "score of 3", "Final grade is 4", "Score (1-5): 4"
_EXPLICIT = re.compile(
    r"\b(?:score|rating|grade)\b"
    r"(?:\s*\(\s*1\s*(?:-|–|to)\s*5\s*\))?"
    r"[\s*_\"'`:=\[\]-]*(?:(?:is|of|would\s+be|=)\s*)?[\s*_\"'`\[]*" + _NUMBER + _OUT_OF,
    re.IGNORECASE,
)
#: "[[4]]"
_BRACKETED = re.compile(r"\[\[\s*" + _NUMBER + r"\s*\]\]")
#: "3 out of 5", "4/5", "10/10": only over 5 or 10, so a math answer's 1/2 is no score
_FRACTION = re.compile(r"(?<![\d./])" + _NUMBER + r"\s*(?:/|out\s+of)\s*(5|10)(?!\d|\.\d)", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")
#: the scale restated ("Score 1-5: 4", "on a scale of 1 to 5", "(1–5)"): never a score itself
_SCALE = re.compile(r"\(?\s*\b(?:from\s+)?1\s*(?:-|–|to)\s*5\b\s*\)?", re.IGNORECASE)


def _as_score(value: str, scale: str | None) -> int | None:
    if scale is not None and int(scale) != 5:
        return None
    number = float(value)
    if not number.is_integer() or not 1 <= number <= 5:
        return None
    return int(number)


def parse_score(text: str | None) -> int | None:
    """The 1-5 score in a judge's reply, or None.

    A named score wins ("Score: 4", "**Rating:** 5/5", ``{"score": 2}``, "[[4]]"), then a
    score over 5 or 10 ("3 out of 5", "4/5"); with several, the last one counts (judges
    often restate the rubric first). Without either, a reply holding a single number
    uses it ("4", "I'd give it a 3").
    Out of range (0, 6, "10/10", "4/10") or a fraction (4.5) gives None.
    """
    if not text:
        return None
    text = _SCALE.sub(" ", text)
    named = [(m.start(), m.group(1), m.group(2)) for m in _EXPLICIT.finditer(text)]
    named += [(m.start(), m.group(1), None) for m in _BRACKETED.finditer(text)]
    fractions = [(m.start(), m.group(1), m.group(2)) for m in _FRACTION.finditer(text)]
    for mentions in (named, fractions):
        if mentions:
            _, value, scale = max(mentions, key=lambda m: m[0])  # the last one
            return _as_score(value, scale)
    numbers = _ANY_NUMBER.findall(text)
    if len(numbers) == 1:
        return _as_score(numbers[0], None)
    return None


# --------------------------------------------------------------------------- records -> messages


def question_text(prompt: Any) -> str:
    """A record's question: the prompt string, or the content of its last user message."""
    try:
        return message_text(prompt, role="user", last=True)
    except ValueError:
        raise ValueError("field 'prompt' should be a string or a list of chat messages") from None


def reference_text(record: Mapping) -> str | None:
    """The record's reference answer (``reference``, else ``answer``), as text, or None."""
    for key in ("reference", "answer"):
        value = record.get(key)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def judge_messages(record: Mapping, rubric: str) -> list[dict]:
    """The chat messages that ask the judge about one record."""
    content = render_rubric(
        rubric,
        question=question_text(record.get("prompt")),
        response=completion_text(record.get("completion")),
        reference=reference_text(record),
    )
    return [{"role": "user", "content": content}]
