"""``score_poem(record, completion)``: the paper's poem metrics for one completion, and their mean.

The prompt record carries every constraint, so scoring never reads the prompt text:

- ``form``: ``wujue`` ``qijue`` ``wulv`` ``qilv`` (五言/七言 绝句/律诗; the Chinese
  names are accepted too), ``ci`` (Song ci, with ``tune``), or ``haiku``
  ``limerick`` ``quatrain`` (English);
- ``title``: the title the poem must carry (for ci it defaults to the tune name,
  and a title line counts when it starts with the tune: ``如梦令·春晚``);
- ``tune``: the 词牌 of a ci (see :func:`dpo3d.poetry.ci_tunes.known_tunes`);
- ``language``: ``zh`` or ``en`` (default: ``en`` for English forms, else ``zh``).

The result holds each metric that applies, in [0, 1], and ``score``, their mean:
``row_number``, ``words_per_row``, ``rhythm`` (not for haiku), ``tone_pattern``
(Chinese only) and ``title`` (when a title is asked for). How the completion is
read is in :mod:`dpo3d.poetry.text`; the metrics in
:mod:`dpo3d.poetry.chinese_forms` and :mod:`dpo3d.poetry.english_forms`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpo3d.data.schema import message_text
from dpo3d.poetry.chinese_forms import FORM_ALIASES, SHI_FORMS, score_rows, shi_patterns
from dpo3d.poetry.ci_tunes import canonical_tune, ci_patterns
from dpo3d.poetry.english_forms import ENGLISH_FORMS, score_english_rows, split_english_rows
from dpo3d.poetry.text import parse_poem, title_matches

POEM_METRICS = ("row_number", "words_per_row", "rhythm", "tone_pattern", "title")
POEM_FORMS = (*SHI_FORMS, "ci", *ENGLISH_FORMS)


def poem_form(record: Mapping) -> str:
    """The record's form id, with Chinese names mapped to ids; ValueError if missing or unknown."""
    form = record.get("form")
    if not isinstance(form, str) or not form:
        raise ValueError("poem record: needs a 'form' field (one of " + ", ".join(POEM_FORMS) + ")")
    form = FORM_ALIASES.get(form.strip(), form.strip().lower())
    if form not in POEM_FORMS:
        raise ValueError(f"poem record: unknown form {record.get('form')!r}; known: {', '.join(POEM_FORMS)}")
    return form


def score_poem(record: Mapping, completion: Any) -> dict[str, float]:
    """Score a completion (string or chat messages) against a poem prompt record."""
    form = poem_form(record)
    english = form in ENGLISH_FORMS
    language = record.get("language") or ("en" if english else "zh")
    if english != (language == "en"):
        raise ValueError(f"poem record: form {form!r} does not go with language {language!r}")
    tune = None
    if form == "ci":
        if not record.get("tune"):
            raise ValueError("poem record: a ci needs a 'tune' (词牌) field")
        tune = canonical_tune(str(record["tune"]))
    title = record.get("title") or tune
    parsed = parse_poem(message_text(completion), language=language, title=title, tune=tune)

    if english:
        metrics = score_english_rows(split_english_rows(parsed.rows), form)
    else:
        patterns = list(ci_patterns(tune)) if tune else shi_patterns(form)
        metrics = score_rows(parsed.rows, patterns)
    if title:
        metrics["title"] = 1.0 if title_matches(parsed.title, title, tune) else 0.0
    ordered = {name: metrics[name] for name in POEM_METRICS if name in metrics}
    ordered["score"] = sum(ordered.values()) / len(ordered)
    return ordered
