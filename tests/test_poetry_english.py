"""English haiku, limericks and quatrains: syllables and rhymes from CMUdict (pronouncing)."""

from __future__ import annotations

import pytest

from dpo3d.poetry import score_poem
from dpo3d.poetry.rhyme import english_rhyme_keys, line_syllables, word_syllables

BASHO = "The Old Pond\n\nAn old silent pond\nA frog jumps into the pond—\nSplash! Silence again."
LEAR = (
    "There was an Old Man with a beard,\n"
    "Who said, 'It is just as I feared!\n"
    "Two Owls and a Hen,\n"
    "Four Larks and a Wren,\n"
    "Have all built their nests in my beard!'"
)
WORDSWORTH = (
    "I wandered lonely as a cloud\n"
    "That floats on high o'er vales and hills,\n"
    "When all at once I saw a crowd,\n"
    "A host, of golden daffodils;"
)


def record(form: str, title: str | None = None) -> dict:
    out = {"form": form, "language": "en", "subject": "x"}
    if title:
        out["title"] = title
    return out


def test_basho_haiku_full_marks():
    scores = score_poem(record("haiku", "The Old Pond"), BASHO)
    assert scores == {"row_number": 1.0, "words_per_row": 1.0, "title": 1.0, "score": 1.0}  # no rhyme in haiku


def test_haiku_with_a_long_line_and_one_line_form():
    long_line = "The Old Pond\n\nAn old silent pond\nA green frog jumps into the pond—\nSplash! Silence again."
    assert score_poem(record("haiku", "The Old Pond"), long_line)["words_per_row"] == pytest.approx(2 / 3)
    one_line = "An old silent pond / A frog jumps into the pond / Splash! Silence again."
    scores = score_poem(record("haiku"), one_line)
    assert scores["row_number"] == scores["words_per_row"] == 1.0 and "title" not in scores


def test_lear_limerick_full_marks_and_broken_rhyme():
    assert score_poem(record("limerick"), LEAR)["score"] == 1.0
    broken = LEAR.replace("as I feared!", "as I thought!")
    scores = score_poem(record("limerick"), broken)
    assert scores["rhythm"] == pytest.approx(2 / 3)  # A set beard/thought/beard: 2 of 3; B set Hen/Wren intact
    assert scores["row_number"] == scores["words_per_row"] == 1.0
    short = "\n".join(LEAR.split("\n")[:3])
    scores = score_poem(record("limerick"), short)
    assert scores["row_number"] == pytest.approx(0.6) and scores["words_per_row"] == pytest.approx(0.6)
    assert scores["rhythm"] == pytest.approx(1 / 3)  # only beard/feared of the 3 needed rhymes


def test_quatrains_abab_and_the_frost_stanza():
    assert score_poem(record("quatrain", "Daffodils"), "Daffodils\n\n" + WORDSWORTH)["score"] == 1.0
    frost = (
        "Whose woods these are I think I know.\n"
        "His house is in the village though;\n"
        "He will not see me stopping here\n"
        "To watch his woods fill up with snow."
    )
    # Frost's stanza is AABA: neither ABAB nor AABB is met in full (AABB keeps know/though)
    assert score_poem(record("quatrain"), frost)["rhythm"] == pytest.approx(0.5)


def test_syllables_and_rhymes_come_from_the_dictionary():
    assert word_syllables("fire") == frozenset({1, 2})  # two CMUdict pronunciations
    assert line_syllables("every fire") == (3, 5)
    assert word_syllables("blorptastic") == frozenset({3})  # not in CMUdict: vowel groups
    assert english_rhyme_keys("in my beard") & english_rhyme_keys("as I feared")
    assert not english_rhyme_keys("a cloud") & english_rhyme_keys("the hills")
    assert english_rhyme_keys(None) == frozenset() and english_rhyme_keys("!!!") == frozenset()


def test_title_rules_in_english():
    scores = score_poem(record("haiku", "The Old Pond"), "Title: the old pond\nAn old silent pond\nA frog jumps into the pond—\nSplash! Silence again.")
    assert scores["title"] == 1.0 and scores["row_number"] == 1.0
    untitled = score_poem(record("haiku", "The Old Pond"), "An old silent pond\nA frog jumps into the pond—\nSplash! Silence again.")
    assert untitled["title"] == 0.0 and untitled["words_per_row"] == 1.0
