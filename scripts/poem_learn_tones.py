"""Learn which characters Tang poets used against their Mandarin tone (mostly the old entering tone).

In a regulated poem (绝句 or 律诗) the 2nd, 4th and 6th characters of each row
alternate, the rows follow 对 and 粘, the even rows end level and the odd rows
after the first end oblique. All these slots are fixed up to one bit per poem:
whether row 1's 2nd character is level or oblique. For every 4- or 8-row poem of
5- or 7-character rows, the bit that agrees best with the current tone reading
is chosen; a poem agreeing at fewer than ``agreement`` of its slots is taken as
not regulated (古绝, 拗体) and ignored. Each slot of a regulated poem is then a
vote for its character's classical tone. A character with at least
``min_votes`` votes that Mandarin reads level in some context but whose votes
are at least ``share`` oblique goes into OBLIQUE (the entering tone, mostly),
the converse into LEVEL, and one with at least ``both_votes`` votes of which
each side has at least ``both_share`` into BOTH (two classical readings). The
table is applied and the poems re-read, three rounds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from dpo3d.poetry.tones import EITHER, LEVEL, OBLIQUE, mandarin_classes

_FLIP = {LEVEL: OBLIQUE, OBLIQUE: LEVEL}


def _slots(rows: int, chars: int, bit: str) -> list[tuple[int, int, str]]:
    """(row, position, expected tone) of a regulated poem whose first row's 2nd character has tone ``bit``."""
    out = []
    for row in range(rows):
        second = bit if row % 4 in (0, 3) else _FLIP[bit]
        keys = [1, 3, 5] if chars == 7 else [1, 3]
        for index, position in enumerate(keys):
            out.append((row, position, second if index % 2 == 0 else _FLIP[second]))
        if row % 2 == 1:
            out.append((row, chars - 1, LEVEL))
        elif row > 0:
            out.append((row, chars - 1, OBLIQUE))
    return out


def _read(row: str, oblique: set[str], level: set[str], both: set[str]) -> list[str]:
    tones = mandarin_classes(row)
    return [
        OBLIQUE if c in oblique else LEVEL if c in level else EITHER if c in both else t for c, t in zip(row, tones, strict=True)
    ]


def learn_tone_corrections(
    poems: list[list[str]],
    min_votes: int = 8,
    share: float = 0.85,
    agreement: float = 0.85,
    rounds: int = 3,
    both_votes: int = 20,
    both_share: float = 0.25,
) -> tuple[set[str], set[str], set[str], dict]:
    """Return (OBLIQUE, LEVEL, BOTH, stats) learned from poems given as lists of rows."""
    shaped = [rows for rows in poems if len(rows) in (4, 8) and len({len(r) for r in rows}) == 1 and len(rows[0]) in (5, 7)]
    mandarin = [[mandarin_classes(row) for row in rows] for rows in shaped]
    oblique: set[str] = set()
    level: set[str] = set()
    both: set[str] = set()
    stats: dict = {"candidates": len(shaped)}
    for _ in range(rounds):
        votes: dict[str, Counter] = defaultdict(Counter)
        heard: dict[str, Counter] = defaultdict(Counter)
        regulated = 0
        for rows, plain in zip(shaped, mandarin, strict=True):
            read = [_read(row, oblique, level, both) for row in rows]
            best = None
            for bit in (LEVEL, OBLIQUE):
                slots = _slots(len(rows), len(rows[0]), bit)
                agree = sum(1 for r, p, want in slots if read[r][p] in (want, EITHER))
                if best is None or agree > best[0]:
                    best = (agree, slots)
            assert best is not None
            agree, slots = best
            if agree < agreement * len(slots):
                continue
            regulated += 1
            for r, p, want in slots:
                votes[rows[r][p]][want] += 1
                heard[rows[r][p]][plain[r][p]] += 1
        new_oblique, new_level, new_both = set(), set(), set()
        for char, counter in votes.items():
            total = counter[LEVEL] + counter[OBLIQUE]
            if total < min_votes:
                continue
            if heard[char][LEVEL] and counter[OBLIQUE] >= share * total:
                new_oblique.add(char)
            elif heard[char][OBLIQUE] and counter[LEVEL] >= share * total:
                new_level.add(char)
            elif total >= both_votes and min(counter[LEVEL], counter[OBLIQUE]) >= both_share * total:
                new_both.add(char)
        oblique, level, both = new_oblique, new_level, new_both
        stats["regulated"] = regulated
    stats.update(oblique=len(oblique), level=len(level), both=len(both))
    return oblique, level, both, stats


def write_table(path: Path, oblique: set[str], level: set[str], both: set[str], stats: dict) -> None:
    """Write the generated module ``dpo3d/poetry/_classical_tones.py``."""
    def chunks(chars: set[str]) -> str:
        ordered = "".join(sorted(chars))
        return "\n".join(f'    "{ordered[i:i + 60]}"' for i in range(0, len(ordered), 60)) or '    ""'

    path.write_text(
        '"""Generated by scripts/build_poem_data.py (scripts/poem_learn_tones.py): do not edit.\n\n'
        "Characters whose use in Tang regulated verse contradicts their Mandarin tone;\n"
        "see dpo3d/poetry/tones.py for how they were learned and used.\n"
        f"Learned from {stats['candidates']} poems of regulated shape, {stats['regulated']} found regulated.\n"
        '"""\n\n'
        "# read level (tone 1/2) in Mandarin, used oblique: mostly the old entering tone 入声\n"
        f"OBLIQUE = (\n{chunks(oblique)}\n)\n\n"
        "# read oblique (tone 3/4) in Mandarin, used level\n"
        f"LEVEL = (\n{chunks(level)}\n)\n\n"
        "# used both ways, each on at least a quarter of their fixed slots: two classical readings\n"
        f"BOTH = (\n{chunks(both)}\n)\n",
        encoding="utf-8",
    )
