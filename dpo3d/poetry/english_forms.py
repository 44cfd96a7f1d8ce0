"""English forms: haiku, limerick and quatrain, scored by syllables (CMUdict) and rhyme.

Rows are the completion's non-blank lines after :func:`dpo3d.poetry.text.parse_poem`
(a line holding `` / `` is cut there, the way haiku are often written on one
line). The metrics share the Chinese ones' names and are in [0, 1]:

- ``row_number`` = max(0, 1 − |n − N| / N) for n rows against the form's N.
- ``words_per_row``: the unit is the syllable. Row i (for i < N) counts when the
  syllables it can be read with (:func:`dpo3d.poetry.rhyme.line_syllables` gives
  the fewest and the most) reach into the form's range for that row; the score
  is the count over max(n, N).
- ``rhythm``: the rhyme scheme. For each set of rows that must rhyme, how many
  of their last words share a rhyming part, minus one, over the set's size minus
  one, summed over the sets; a missing row does not rhyme. A quatrain takes the
  better of ABAB and AABB. Haiku asks for no rhyme, so has no rhythm metric.
- There is no tone pattern (English metre is not scored).

Form ranges:

| form | rows | syllables per row | rhyme |
|---|---|---|---|
| haiku | 3 | exactly 5, 7, 5 | none |
| limerick | 5 | rows 1, 2, 5: 7-11; rows 3, 4: 4-8 | AABBA |
| quatrain | 4 | 6-12 each | ABAB or AABB |
"""

from __future__ import annotations

from dataclasses import dataclass

from dpo3d.poetry.rhyme import english_rhyme_keys, largest_rhyme_class, line_syllables


@dataclass(frozen=True)
class EnglishForm:
    name: str
    syllables: tuple[tuple[int, int], ...]  # inclusive range per row
    schemes: tuple[tuple[tuple[int, ...], ...], ...]  # alternative rhyme schemes, each a tuple of rhyme sets

    @property
    def rows(self) -> int:
        return len(self.syllables)


ENGLISH_FORMS = {
    "haiku": EnglishForm("haiku", ((5, 5), (7, 7), (5, 5)), ()),
    "limerick": EnglishForm("limerick", ((7, 11), (7, 11), (4, 8), (4, 8), (7, 11)), (((0, 1, 4), (2, 3)),)),
    "quatrain": EnglishForm("quatrain", ((6, 12),) * 4, (((0, 2), (1, 3)), ((0, 1), (2, 3)))),
}


def split_english_rows(lines: list[str]) -> list[str]:
    rows = []
    for line in lines:
        rows.extend(part.strip() for part in line.split(" / ") if part.strip())
    return rows


def _scheme_score(rows: list[str], scheme: tuple[tuple[int, ...], ...]) -> float:
    gained = needed = 0
    for rhyme_set in scheme:
        keys = [english_rhyme_keys(rows[index] if index < len(rows) else None) for index in rhyme_set]
        gained += max(largest_rhyme_class(keys) - 1, 0)
        needed += len(rhyme_set) - 1
    return gained / needed


def score_english_rows(rows: list[str], form: str) -> dict[str, float]:
    if form not in ENGLISH_FORMS:
        raise ValueError(f"unknown English form {form!r}; known: {', '.join(ENGLISH_FORMS)}")
    spec = ENGLISH_FORMS[form]
    expected = spec.rows
    fitting = 0
    for row, (low, high) in zip(rows, spec.syllables, strict=False):
        fewest, most = line_syllables(row)
        if fewest <= high and most >= low:
            fitting += 1
    metrics = {
        "row_number": max(0.0, 1.0 - abs(len(rows) - expected) / expected),
        "words_per_row": fitting / max(len(rows), expected),
    }
    if spec.schemes:
        metrics["rhythm"] = max(_scheme_score(rows, scheme) for scheme in spec.schemes)
    return metrics
