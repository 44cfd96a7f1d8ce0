"""Song ci (宋词) tunes (词牌): each tune's rows, tones and rhymes, as :class:`Pattern` objects.

The patterns are learned from 全宋词 (the chinese-poetry package) by
``scripts/poem_learn_tunes.py`` and stored in the generated module
:mod:`dpo3d.poetry._ci_tunes_data`: for each of the ~50 tunes with at least 80
poems, the most common row structure (and one common variant, 又一体, where it
holds at least 15% of the poems), a 平/仄 slot wherever at least 80% of those
poems agree (else 中), the rows that rhyme (全宋词 marks a rhyme with 。) and how
they group when the tune changes rhyme (菩萨蛮, 清平乐, 虞美人 ...).
A ci is scored against every form of its tune and keeps the best (see
:func:`dpo3d.poetry.chinese_forms.score_rows`).
"""

from __future__ import annotations

from functools import cache

from dpo3d.poetry._ci_tunes_data import TUNES
from dpo3d.poetry.chinese_forms import Pattern


def known_tunes() -> list[str]:
    """Tune names, most written first."""
    return sorted(TUNES, key=lambda tune: -TUNES[tune]["poems"])


def canonical_tune(tune: str) -> str:
    """The tune as stored: ``念奴娇·赤壁怀古`` and ``《念奴娇》`` both give ``念奴娇``."""
    name = tune.strip().strip("《》").replace("・", "·").split("·")[0].strip()
    if name not in TUNES:
        raise ValueError(f"unknown ci tune {tune!r}; known: {', '.join(known_tunes())}")
    return name


@cache
def ci_patterns(tune: str) -> tuple[Pattern, ...]:
    """The patterns (main form first) of a tune."""
    name = canonical_tune(tune)
    return tuple(
        Pattern(
            rows=tuple(form["rows"]),
            rhyme_sets=tuple(tuple(rhyme_set) for rhyme_set in form["rhyme_sets"]),
            name=f"{name} ({form['poems']} poems)",
        )
        for form in TUNES[name]["forms"]
    )
