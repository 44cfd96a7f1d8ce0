"""Slogan rules: Word Count and Content, each in [0, 1]; the score is their mean.

The record carries the constraints (``scripts/build_poem_data.py`` writes them):
``language`` ("zh"/"en"), ``subject`` (what to advertise), ``keywords`` (other
names that count as mentioning it; optional), ``length`` (the most units
allowed), ``min_length`` (the fewest; optional, default 1) and ``banned`` (words
that must not appear).

Reading the completion: Markdown marks, a preamble line ending in a colon, and
a leading label (``Slogan:``, ``标语：``, ``口号：``, ``广告语：``) are dropped, a
note (``注：``, ``Note:`` ...) ends it, and quotes around a line are removed. All
remaining non-blank lines together are the slogan: explanations count against it.

- Units: Chinese counts Chinese characters, plus one per run of Latin letters or
  digits ("5G网络" is 3); English counts words (letters/digits, with inner
  apostrophes or hyphens: "don't", "e-bike" are one word each).
- ``word_count`` = 1 when min_length <= units <= length; else it falls linearly,
  1 − (units − length)/length above the range and 1 − (min_length − units)/min_length
  below it, floored at 0.
- ``content`` = the mean of three checks, each 0 or 1:
  * mentions: the subject or one of the keywords appears (Chinese: as a
    substring; English: as whole words, case-insensitive, a plural -s/-es allowed);
  * clean: no banned word appears (matched the same way);
  * original: not a copy of the prompt, i.e. the slogan's units do not appear
    as one contiguous run in the prompt, and under 60% of its unit bigrams
    (character pairs for Chinese, word pairs for English) occur in the prompt.
  An empty slogan scores 0 on all three.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from dpo3d.data.schema import message_text
from dpo3d.poetry.text import FENCE, NOTES, PREAMBLE, clean_line
from dpo3d.poetry.tones import is_han

_SLOGAN_LABEL = re.compile(r"^\s*(?:slogan|tagline|标语|口号|广告语|宣传语)\s*[:：]\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’「」『』《》"
_EN_WORD = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*")
_LATIN_RUN = re.compile(r"[A-Za-z0-9]+")
COPY_SHARE = 0.6


def extract_slogan(completion: str) -> str:
    lines = []
    for raw in completion.replace("\r", "\n").split("\n"):
        if FENCE.match(raw):
            continue
        text, _ = clean_line(raw)
        if not text:
            continue
        if NOTES.match(text):
            break
        lines.append(text)
    if len(lines) > 1 and PREAMBLE.search(lines[0]) and not _SLOGAN_LABEL.match(lines[0]):
        lines = lines[1:]
    cleaned = [_SLOGAN_LABEL.sub("", line).strip().strip(_QUOTES).strip() for line in lines]
    return " ".join(line for line in cleaned if line)


def units(text: str, language: str) -> list[str]:
    """The counting units of a slogan (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text)
    if language == "zh":
        out: list[str] = []
        for match in re.finditer(r"[A-Za-z0-9]+|.", text, re.DOTALL):
            token = match.group()
            if is_han(token) or _LATIN_RUN.fullmatch(token):
                out.append(token.lower())
        return out
    return [word.lower().replace("’", "'") for word in _EN_WORD.findall(text)]


def _term_pattern(term: str) -> re.Pattern:
    words = [re.escape(word) for word in _EN_WORD.findall(term.lower())]
    return re.compile(r"(?<![A-Za-z0-9])" + r"[\s\-]+".join(words) + r"(?:s|es)?(?![A-Za-z0-9])", re.IGNORECASE)


def contains_term(text: str, term: str, language: str) -> bool:
    text = unicodedata.normalize("NFKC", text)
    term = unicodedata.normalize("NFKC", term).strip()
    if not term:
        return False
    if language == "zh" and any(is_han(char) for char in term):
        return term.lower() in text.lower()
    if not _EN_WORD.search(term):
        return False
    return bool(_term_pattern(term).search(text))


def _contiguous(needle: list[str], haystack: list[str]) -> bool:
    size = len(needle)
    return any(haystack[i : i + size] == needle for i in range(len(haystack) - size + 1))


def is_copy(slogan: str, prompt: str, language: str) -> bool:
    mine, theirs = units(slogan, language), units(prompt, language)
    if not mine:
        return False
    if _contiguous(mine, theirs):
        return True
    bigrams = list(zip(mine, mine[1:], strict=False))
    if not bigrams:
        return False
    seen = set(zip(theirs, theirs[1:], strict=False))
    return sum(1 for pair in bigrams if pair in seen) >= COPY_SHARE * len(bigrams)


def content_checks(record: Mapping, slogan: str) -> dict[str, bool]:
    language = record.get("language", "zh")
    if not slogan.strip():
        return {"mentions": False, "clean": False, "original": False}
    terms = [record.get("subject", ""), *record.get("keywords", [])]
    prompt = message_text(record.get("prompt", ""))
    return {
        "mentions": any(contains_term(slogan, term, language) for term in terms if term),
        "clean": not any(contains_term(slogan, word, language) for word in record.get("banned", [])),
        "original": not is_copy(slogan, prompt, language),
    }


def word_count_score(count: int, length: int, min_length: int = 1) -> float:
    if length < 1 or min_length > length:
        raise ValueError(f"bad length range {min_length}..{length}")
    if count > length:
        return max(0.0, 1.0 - (count - length) / length)
    if count < min_length:
        return max(0.0, 1.0 - (min_length - count) / min_length)
    return 1.0


def score_slogan(record: Mapping, completion: Any) -> dict[str, float]:
    """``{"word_count", "content", "score"}`` for a completion against a slogan prompt record."""
    language = record.get("language", "zh")
    if language not in ("zh", "en"):
        raise ValueError(f"slogan record: language must be 'zh' or 'en', got {language!r}")
    if not isinstance(record.get("length"), int):
        raise ValueError("slogan record: needs an integer 'length' (the most units allowed)")
    slogan = extract_slogan(message_text(completion))
    checks = content_checks(record, slogan)
    metrics = {
        "word_count": word_count_score(len(units(slogan, language)), record["length"], record.get("min_length", 1)),
        "content": sum(checks.values()) / len(checks),
    }
    metrics["score"] = sum(metrics.values()) / len(metrics)
    return metrics
