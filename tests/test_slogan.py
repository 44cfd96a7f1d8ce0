"""Slogan rules: Word Count and Content (mentions the subject, no banned words, not a copy)."""

from __future__ import annotations

import pytest

from dpo3d.poetry import score_slogan
from dpo3d.poetry.slogan import content_checks, extract_slogan, is_copy, units, word_count_score

ZH = {
    "id": "s1",
    "prompt": "请为一家社区咖啡馆写一句宣传标语。要求：6到10个字，标语里要提到“咖啡”，不能使用“最”“第一”这些词，也不要照抄题目。",
    "language": "zh",
    "subject": "咖啡",
    "keywords": ["拿铁"],
    "length": 10,
    "min_length": 6,
    "banned": ["最", "第一"],
}
EN = {
    "id": "s2",
    "prompt": 'Write a slogan for a bike-sharing service. It must be 3 to 6 words long, mention "bike", '
    'and not use the words "best", "free"; do not copy this request.',
    "language": "en",
    "subject": "bike",
    "keywords": ["cycling"],
    "length": 6,
    "min_length": 3,
    "banned": ["best", "free"],
}


def test_good_slogans_get_full_marks():
    assert score_slogan(ZH, "一杯咖啡，温暖街坊") == {"word_count": 1.0, "content": 1.0, "score": 1.0}
    assert score_slogan(EN, "Your city, by bike.") == {"word_count": 1.0, "content": 1.0, "score": 1.0}
    assert score_slogan(EN, "Keep cycling, keep smiling")["score"] == 1.0  # a keyword counts as the subject
    assert score_slogan(EN, "Two wheels, many bikes")["content"] == 1.0  # plural allowed


def test_labels_quotes_and_preambles_are_not_counted():
    assert extract_slogan("好的，标语如下：\n标语：“一杯咖啡，温暖街坊”") == "一杯咖啡，温暖街坊"
    assert extract_slogan('**Slogan:** "Your city, by bike."\n\nNote: short and punchy.') == "Your city, by bike."
    assert score_slogan(ZH, [{"role": "assistant", "content": "「一杯咖啡，温暖街坊」"}])["score"] == 1.0


def test_word_count_counts_characters_or_words_and_decays_linearly():
    assert len(units("5G网络，连接你我", "zh")) == 7  # 5G is one unit
    assert len(units("Don't stop: ride an e-bike!", "en")) == 5
    assert word_count_score(8, 10, 6) == 1.0
    assert word_count_score(15, 10, 6) == pytest.approx(0.5)
    assert word_count_score(3, 10, 6) == pytest.approx(0.5)
    assert word_count_score(30, 10, 6) == 0.0
    long_zh = score_slogan(ZH, "每天清晨的一杯香浓咖啡都让整个街坊变得温暖")  # 21 characters for at most 10
    assert long_zh["word_count"] == 0.0 and long_zh["content"] == 1.0
    explained = score_slogan(EN, "Your city, by bike.\nThis slogan stresses freedom and the city.")
    assert explained["word_count"] < 1.0  # an explanation is part of the answer


def test_content_checks_each_cost_a_third():
    no_subject = score_slogan(ZH, "温暖街坊的每一个早晨")
    assert no_subject["content"] == pytest.approx(2 / 3)
    assert content_checks(ZH, "温暖街坊的每一个早晨") == {"mentions": False, "clean": True, "original": True}
    banned = score_slogan(ZH, "第一口咖啡，温暖街坊")
    assert banned["content"] == pytest.approx(2 / 3) and banned["word_count"] == 1.0
    banned_en = score_slogan(EN, "The best bike in town")
    assert content_checks(EN, "The best bike in town")["clean"] is False
    assert banned_en["content"] == pytest.approx(2 / 3)
    assert content_checks(EN, "Bestow your bike a ride")["clean"] is True  # whole words only


def test_a_copy_of_the_prompt_is_not_original():
    copied = "Write a slogan for a bike-sharing service"
    assert is_copy(copied, EN["prompt"], "en")
    assert content_checks(EN, copied)["original"] is False
    assert is_copy("社区咖啡馆写一句宣传标语", ZH["prompt"], "zh")
    assert not is_copy("一杯咖啡，温暖街坊", ZH["prompt"], "zh")  # shares only 咖啡
    assert score_slogan(EN, "")["score"] == 0.0


def test_bad_slogan_records_are_refused():
    with pytest.raises(ValueError, match="integer 'length'"):
        score_slogan({"language": "en", "subject": "x"}, "hi")
    with pytest.raises(ValueError, match="language"):
        score_slogan({"language": "fr", "length": 5}, "hi")
