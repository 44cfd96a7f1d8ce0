"""How a model's completion is read: title, byline, preamble, notes, rows, characters."""

from __future__ import annotations

import pytest

from dpo3d.poetry import parse_poem, score_poem
from dpo3d.poetry.text import content_chars, normalise_title, split_zh_rows, title_matches

ROWS = ["白日依山尽", "黄河入海流", "欲穷千里目", "更上一层楼"]
RECORD = {"form": "wujue", "title": "登鹳雀楼", "language": "zh"}


@pytest.mark.parametrize(
    "completion",
    [
        "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
        "《登鹳雀楼》\n\n白日依山尽，\n黄河入海流。\n欲穷千里目，\n更上一层楼。",
        "标题：登鹳雀楼\n白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
        "**登鹳雀楼**\n唐·王之涣\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
        "# 登鹳雀楼\n白日依山尽, 黄河入海流.\n欲穷千里目, 更上一层楼.",
        "好的，以下是一首五言绝句：\n\n登鹳雀楼\n王之涣\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n\n注释：写登楼远望。",
        "```\n登鹳雀楼\n白日依山尽　黄河入海流\n欲穷千里目　更上一层楼\n```",
        "登鹳雀楼\n\n白日依山尽\n黄河入海流\n欲穷千里目\n更上一层楼\n——王之涣",
    ],
)
def test_the_same_poem_in_many_layouts_reads_the_same(completion):
    parsed = parse_poem(completion, "zh", title="登鹳雀楼")
    assert parsed.title is not None and normalise_title(parsed.title) == "登鹳雀楼"
    assert parsed.rows == ROWS
    assert score_poem(RECORD, completion)["score"] == 1.0


def test_untitled_poem_rows_on_their_own_lines():
    parsed = parse_poem("白日依山尽\n黄河入海流\n欲穷千里目\n更上一层楼", "zh", title="登鹳雀楼")
    assert parsed.title is None and parsed.rows == ROWS
    scores = score_poem(RECORD, "白日依山尽\n黄河入海流\n欲穷千里目\n更上一层楼")
    assert scores["title"] == 0.0 and scores["row_number"] == 1.0 and scores["tone_pattern"] == 1.0


def test_a_different_title_is_found_but_does_not_match():
    parsed = parse_poem("登楼\n白日依山尽，黄河入海流。欲穷千里目，更上一层楼。", "zh", title="登鹳雀楼")
    assert parsed.title == "登楼" and parsed.rows == ROWS
    assert not title_matches(parsed.title, "登鹳雀楼")


def test_row_splitting_rules():
    assert split_zh_rows("白日依山尽，黄河入海流。欲穷千里目；更上一层楼！") == ROWS
    assert split_zh_rows("浪淘尽、千古风流人物") == ["浪淘尽千古风流人物"]  # 、 does not end a row
    assert split_zh_rows("春风 又绿江南岸") == ["春风", "又绿江南岸"]  # whitespace does
    assert content_chars("“5G”时代，来了！") == "5G时代来了"
    assert split_zh_rows("") == []


def test_commentary_after_the_poem_counts_as_rows():
    completion = "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n这首诗写得很好。"
    scores = score_poem(RECORD, completion)
    assert scores["row_number"] == pytest.approx(0.75)  # five rows for four
    assert scores["tone_pattern"] == 1.0 and scores["rhythm"] == 1.0


def test_chat_message_completion_and_empty_completion():
    messages = [{"role": "assistant", "content": "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。"}]
    assert score_poem(RECORD, messages)["score"] == 1.0
    empty = score_poem(RECORD, "")
    assert empty == {"row_number": 0.0, "words_per_row": 0.0, "rhythm": 0.0, "tone_pattern": 0.0,
                     "title": 0.0, "score": 0.0}


def test_bad_records_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="needs a 'form'"):
        score_poem({"title": "x"}, "x")
    with pytest.raises(ValueError, match="unknown form"):
        score_poem({"form": "sonnet"}, "x")
    with pytest.raises(ValueError, match="does not go with language"):
        score_poem({"form": "haiku", "language": "zh"}, "x")
    assert score_poem({"form": "五言绝句", "title": "登鹳雀楼"}, "登鹳雀楼\n" + "，".join(ROWS))["score"] == 1.0
