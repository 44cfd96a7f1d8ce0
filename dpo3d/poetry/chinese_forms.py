"""Classical Chinese forms: the patterns of 绝句 and 律诗, and the four metrics scored against a pattern.

A :class:`Pattern` is one row of 平/仄/中 slots per line (中: either tone) and the
sets of rows whose last characters must rhyme. Regulated verse has four
patterns per form, built from the four basic five-character lines

    a 中仄平平仄   A 中仄仄平平   b 中平平仄仄   B 平平中仄平

(the seven-character lines put two syllables of the opposite tone in front:
a7 = 中平 + a ...). The free slots follow 一三五不论 but keep the rules against
孤平 (B's first slot) and 三平尾 (A's third). A quatrain starting oblique is
``a B b A``, starting level ``b A a B``; when the first row also rhymes its first
line becomes ``A`` or ``B``. Regulated verse continues the quatrain's cycle to
eight rows. A poem is scored against all four patterns of its form and keeps
the best tone score: which one a poet chose is not asked.

Metrics for rows ``r`` (n of them) against a pattern of N rows, each in [0, 1]:

- ``row_number`` = max(0, 1 − |n − N| / N).
- ``words_per_row``: rows are aligned to the pattern rows by the longest common
  subsequence of their lengths; the score is the number of aligned rows of the
  right length over max(n, N). Rows between two aligned ones are paired by
  position (they have the wrong length).
- ``tone_pattern``: over all fixed (平/仄) slots of the pattern, the share filled
  by a character of that tone (:mod:`dpo3d.poetry.tones`), counting only rows of
  the right length; slots of missing or wrong-length rows are misses.
- ``rhythm``: for each rhyme set, how many of its rows' last characters share the
  most common rhyme group (:mod:`dpo3d.poetry.rhyme`), minus one, over the set's
  size minus one; summed over the sets. For 诗 the set is the even rows (the
  first row may rhyme too, but is not required to). A missing row does not rhyme.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpo3d.poetry.rhyme import largest_rhyme_class, zh_rhyme_groups
from dpo3d.poetry.tones import EITHER, fits, is_han, tone_classes


@dataclass(frozen=True)
class Pattern:
    rows: tuple[str, ...]  # one string of 平/仄/中 per row
    rhyme_sets: tuple[tuple[int, ...], ...]  # 0-based rows whose last characters rhyme together
    name: str = ""

    @property
    def lengths(self) -> list[int]:
        return [len(row) for row in self.rows]


FIVE_CHAR_LINES = {"a": "中仄平平仄", "A": "中仄仄平平", "b": "中平平仄仄", "B": "平平中仄平"}
SEVEN_CHAR_LINES = {key: ("中平" if line[1] == "仄" else "中仄") + line for key, line in FIVE_CHAR_LINES.items()}

#: form id -> (rows, characters per row, Chinese name)
SHI_FORMS = {
    "wujue": (4, 5, "五言绝句"),
    "qijue": (4, 7, "七言绝句"),
    "wulv": (8, 5, "五言律诗"),
    "qilv": (8, 7, "七言律诗"),
}
FORM_ALIASES = {
    "五言绝句": "wujue", "五绝": "wujue", "七言绝句": "qijue", "七绝": "qijue",
    "五言律诗": "wulv", "五律": "wulv", "七言律诗": "qilv", "七律": "qilv",
    "词": "ci", "宋词": "ci",
}  # fmt: skip

# the four quatrain cycles: (name, line keys); the first line is replaced when it rhymes
_CYCLES = (
    ("仄起首句不入韵", "aBbA", None),
    ("仄起首句入韵", "aBbA", "A"),
    ("平起首句不入韵", "bAaB", None),
    ("平起首句入韵", "bAaB", "B"),
)


def shi_patterns(form: str) -> list[Pattern]:
    """The four regulated patterns of a 绝句/律诗 form id (see :data:`SHI_FORMS`)."""
    form = FORM_ALIASES.get(form, form)
    if form not in SHI_FORMS:
        raise ValueError(f"unknown classical form {form!r}; known: {', '.join(SHI_FORMS)}")
    rows, chars, _ = SHI_FORMS[form]
    lines = FIVE_CHAR_LINES if chars == 5 else SEVEN_CHAR_LINES
    patterns = []
    for name, cycle, first in _CYCLES:
        keys = list(cycle * (rows // 4))
        if first:
            keys[0] = first
        patterns.append(
            Pattern(
                rows=tuple(lines[key] for key in keys),
                rhyme_sets=(tuple(range(1, rows, 2)),),
                name=name,
            )
        )
    return patterns


def align_rows(actual: list[int], expected: list[int]) -> list[tuple[int, int, bool]]:
    """Pair rows by the longest common subsequence of their lengths.

    Returns ``(actual index, expected index, same length)``; rows left between
    two matched pairs are paired by position with ``same length`` False. Among
    equally long alignments the one that keeps rows in their places wins.
    """
    n, m = len(actual), len(expected)
    lcs = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if actual[i] == expected[j]:
                lcs[i][j] = lcs[i + 1][j + 1] + 1
            else:
                lcs[i][j] = max(lcs[i + 1][j], lcs[i][j + 1])
    matches = []
    i = j = 0
    while i < n and j < m:
        if actual[i] == expected[j] and lcs[i][j] == lcs[i + 1][j + 1] + 1:
            matches.append((i, j))
            i, j = i + 1, j + 1
        elif lcs[i + 1][j + 1] == lcs[i][j]:  # skip both: keeps rows in place when a length is wrong
            i, j = i + 1, j + 1
        elif lcs[i + 1][j] >= lcs[i][j + 1]:
            i += 1
        else:
            j += 1
    pairs: list[tuple[int, int, bool]] = []
    previous = (-1, -1)
    for match in [*matches, (n, m)]:
        gap_actual = range(previous[0] + 1, match[0])
        gap_expected = range(previous[1] + 1, match[1])
        pairs.extend((a, e, False) for a, e in zip(gap_actual, gap_expected, strict=False))
        if match != (n, m):
            pairs.append((match[0], match[1], True))
        previous = match
    return pairs


def tone_score(rows: list[str], pairs: list[tuple[int, int, bool]], pattern: Pattern) -> float:
    total = sum(1 for row in pattern.rows for slot in row if slot != EITHER)
    if total == 0:
        return 1.0
    matched = 0
    for actual, expected, same_length in pairs:
        if not same_length:
            continue
        tones = tone_classes(rows[actual])
        matched += sum(
            1 for tone, slot in zip(tones, pattern.rows[expected], strict=True) if slot != EITHER and fits(tone, slot)
        )
    return matched / total


def rhyme_score(rows: list[str], pairs: list[tuple[int, int, bool]], pattern: Pattern) -> float | None:
    """None when the pattern asks for no rhyme (no set of two or more rows)."""
    by_expected = {expected: actual for actual, expected, _ in pairs}
    gained = needed = 0
    for rhyme_set in pattern.rhyme_sets:
        if len(rhyme_set) < 2:
            continue
        ends = []
        for expected in rhyme_set:
            actual = by_expected.get(expected)
            last = rows[actual][-1] if actual is not None and rows[actual] else ""
            ends.append(zh_rhyme_groups(last) if last and is_han(last) else frozenset())
        gained += max(largest_rhyme_class(ends) - 1, 0)
        needed += len(rhyme_set) - 1
    return gained / needed if needed else None


def score_rows(rows: list[str], patterns: list[Pattern]) -> dict[str, float]:
    """row_number, words_per_row, rhythm, tone_pattern of rows against the best-fitting pattern."""
    best: dict[str, float] | None = None
    for pattern in patterns:
        expected = pattern.lengths
        pairs = align_rows([len(row) for row in rows], expected)
        metrics = {
            "row_number": max(0.0, 1.0 - abs(len(rows) - len(expected)) / len(expected)),
            "words_per_row": sum(1 for *_, same in pairs if same) / max(len(rows), len(expected)),
        }
        rhythm = rhyme_score(rows, pairs, pattern)
        if rhythm is not None:
            metrics["rhythm"] = rhythm
        metrics["tone_pattern"] = tone_score(rows, pairs, pattern)
        if best is None or sum(metrics.values()) > sum(best.values()):
            best = metrics
    assert best is not None, "a form has at least one pattern"
    return best
