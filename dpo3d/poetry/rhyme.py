"""Rhyme and syllables: Chinese by pypinyin finals, English by CMUdict through ``pronouncing``.

Chinese rhyme is judged in modern pronunciation: a character's finals (pypinyin
``Style.FINALS``, strict) fall into the 14 groups of 中华新韵, with 支 (-i after
zh ch sh r z c s) and 齐 (i, ü, er) allowed to rhyme together as that standard
permits. A heteronym rhymes by any of its readings (斜 xié/xiá rhymes with 家).
Classical poems sometimes rhyme by sounds that have since changed (平水韵); such
rows do not rhyme here, and the tests say so where it happens.

English: two words rhyme when some pronunciation of each has the same rhyming
part (``pronouncing.rhyming_part``: the last stressed vowel to the end, stress
marks ignored, so hills/daffodils rhyme on primary and secondary stress), and a
word rhymes with itself. Syllables are counted from CMUdict; a word with several
pronunciations counts as any of them. Words CMUdict lacks fall back to spelling:
syllables are vowel groups (a silent final ``e`` dropped), and the rhyming part
is the spelling from the last vowel group (the last two, for words of more than
five letters), so such a word rhymes only with another unknown word spelled alike.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pronouncing

# 中华新韵 (2005): finals -> group. Keys are pypinyin strict finals (ü written v).
_ZH_GROUPS = {
    "麻": ("a", "ia", "ua"),
    "波": ("o", "uo", "e"),
    "皆": ("ie", "ve", "ê"),
    "开": ("ai", "uai"),
    "微": ("ei", "uei"),
    "豪": ("ao", "iao"),
    "尤": ("ou", "iou"),
    "寒": ("an", "ian", "uan", "van"),
    "文": ("en", "in", "uen", "vn"),
    "唐": ("ang", "iang", "uang"),
    "庚": ("eng", "ing", "ueng", "ong", "iong"),
    "齐": ("i", "v", "er"),  # 支 merged into 齐: pypinyin writes both as "i"
    "姑": ("u",),
}
FINAL_TO_GROUP = {final: group for group, finals in _ZH_GROUPS.items() for final in finals}


@lru_cache(maxsize=65536)
def zh_rhyme_groups(char: str) -> frozenset[str]:
    """The 中华新韵 groups a Chinese character's readings fall into (empty if not Chinese)."""
    from pypinyin import (  # its phrase dictionary takes a second to load: only when a poem is judged
        Style,
        pinyin,
    )

    readings = pinyin(char, style=Style.FINALS, heteronym=True, strict=True, errors=lambda _: [[]])[0]
    groups = set()
    for final in readings:
        if final and final != char:
            groups.add(FINAL_TO_GROUP.get(final, final))
    return frozenset(groups)


def largest_rhyme_class(groups: list[frozenset[str]]) -> int:
    """How many of the given rhyme-group sets share the most common group (a missing end is an empty set)."""
    counts: dict[str, int] = {}
    for options in groups:
        for group in options:
            counts[group] = counts.get(group, 0) + 1
    return max(counts.values(), default=0)


# --------------------------------------------------------------------------- English

_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*")
_VOWELS = re.compile(r"[aeiouy]+")


def english_words(line: str) -> list[str]:
    return [word.lower().replace("’", "'") for word in _WORD.findall(line)]


@lru_cache(maxsize=65536)
def _phones(word: str) -> tuple[str, ...]:
    phones = pronouncing.phones_for_word(word)
    if not phones and word.endswith("'s"):
        phones = pronouncing.phones_for_word(word[:-2])
        phones = [p + " Z" for p in phones]
    return tuple(phones)


def _spelled_syllables(word: str) -> int:
    letters = word.replace("'", "")
    count = len(_VOWELS.findall(letters))
    if count > 1 and letters.endswith("e") and not letters.endswith(("le", "ee", "ye")):
        count -= 1
    return max(count, 1)


@lru_cache(maxsize=65536)
def word_syllables(word: str) -> frozenset[int]:
    """Every syllable count a word can have (several when CMUdict has variants)."""
    phones = _phones(word)
    if phones:
        return frozenset(pronouncing.syllable_count(p) for p in phones)
    return frozenset({_spelled_syllables(word)})


def line_syllables(line: str) -> tuple[int, int]:
    """The fewest and the most syllables a line can be read with."""
    words = english_words(line)
    low = sum(min(word_syllables(word)) for word in words)
    high = sum(max(word_syllables(word)) for word in words)
    return low, high


@lru_cache(maxsize=65536)
def rhyming_parts(word: str) -> frozenset[str]:
    phones = _phones(word)
    if phones:
        return frozenset(re.sub(r"\d", "", pronouncing.rhyming_part(p)) for p in phones)
    letters = word.replace("'", "")
    groups = list(_VOWELS.finditer(letters))
    if not groups:
        return frozenset({"spelling:" + letters})
    start = groups[-2].start() if len(groups) >= 2 and len(letters) > 5 else groups[-1].start()
    return frozenset({"spelling:" + letters[start:]})


def last_word(line: str) -> str | None:
    words = english_words(line)
    return words[-1] if words else None


def english_rhyme_keys(line: str | None) -> frozenset[str]:
    """The rhyming parts of a line's last word (empty for a missing line or one without words)."""
    word = last_word(line) if line else None
    return rhyming_parts(word) if word else frozenset()
