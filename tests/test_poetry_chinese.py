"""Classical Chinese poems and ci scored by the rules: famous texts, honestly, and broken ones."""

from __future__ import annotations

import pytest

from dpo3d.poetry import score_poem
from dpo3d.poetry import tones as tones_module
from dpo3d.poetry.chinese_forms import align_rows, shi_patterns
from dpo3d.poetry.ci_tunes import canonical_tune, ci_patterns, known_tunes
from dpo3d.poetry.rhyme import zh_rhyme_groups
from dpo3d.poetry.tones import LEVEL, OBLIQUE, mandarin_classes, tone_classes

FULL = {"row_number": 1.0, "words_per_row": 1.0, "rhythm": 1.0, "tone_pattern": 1.0, "title": 1.0, "score": 1.0}

DENG_GUAN_QUE_LOU = "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。"
JING_YE_SI = "静夜思\n李白\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"


def shi(form: str, title: str) -> dict:
    return {"form": form, "title": title, "language": "zh"}


def ci(tune: str) -> dict:
    return {"form": "ci", "tune": tune, "language": "zh"}


def rounded(scores: dict) -> dict:
    return {key: round(value, 4) for key, value in scores.items()}


@pytest.mark.parametrize(
    ("form", "title", "text"),
    [
        ("wujue", "登鹳雀楼", DENG_GUAN_QUE_LOU),
        ("wulv", "山居秋暝", "山居秋暝\n空山新雨后，天气晚来秋。明月松间照，清泉石上流。竹喧归浣女，莲动下渔舟。随意春芳歇，王孙自可留。"),
        ("qijue", "早发白帝城", "早发白帝城\n朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。"),
        ("qijue", "枫桥夜泊", "枫桥夜泊\n月落乌啼霜满天，江枫渔火对愁眠。姑苏城外寒山寺，夜半钟声到客船。"),
        # 斜 rhymes with 家 and 花 by its old reading xiá, which pypinyin lists as a heteronym
        ("qijue", "山行", "山行\n远上寒山石径斜，白云生处有人家。停车坐爱枫林晚，霜叶红于二月花。"),
    ],
)
def test_regulated_classics_get_full_marks(form, title, text):
    assert rounded(score_poem(shi(form, title), text)) == FULL


def test_jing_ye_si_is_an_ancient_style_quatrain_and_breaks_the_tone_rules():
    scores = score_poem(shi("wujue", "静夜思"), JING_YE_SI)
    # four rows of five characters, 霜/乡 rhyme (ang), the title is there; the author line is not a row
    assert scores["row_number"] == scores["words_per_row"] == scores["rhythm"] == scores["title"] == 1.0
    # 古绝, not 近体: its best pattern (平起首句入韵) has 16 fixed slots and 3 are broken,
    # 上 in 疑是地上霜 (4th slot wants 平), 头 and 望 in 举头望明月 (2nd wants 仄, 3rd wants 平)
    assert scores["tone_pattern"] == pytest.approx(13 / 16)
    assert scores["score"] == pytest.approx((4 + 13 / 16) / 5)


def test_chun_xiao_rhymes_in_oblique_tones_so_its_tone_pattern_fails():
    text = "春晓\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。"
    scores = score_poem(shi("wujue", "春晓"), text)
    assert scores["rhythm"] == 1.0  # 鸟/少 rhyme (ao)
    assert scores["tone_pattern"] == pytest.approx(7 / 16)  # 仄-rhymed 古绝: 鸟, 少 end where 平 is required


def test_huang_he_lou_is_a_famously_irregular_regulated_verse():
    text = ("黄鹤楼\n昔人已乘黄鹤去，此地空余黄鹤楼。黄鹤一去不复返，白云千载空悠悠。"
            "晴川历历汉阳树，芳草萋萋鹦鹉洲。日暮乡关何处是？烟波江上使人愁。")
    scores = score_poem(shi("qilv", "黄鹤楼"), text)
    assert scores["rhythm"] == scores["row_number"] == 1.0
    assert 0.8 < scores["tone_pattern"] < 1.0  # 拗律: rows 3-4 ignore the pattern (一去不复返 is all oblique)


def test_sound_change_breaks_modern_rhyme_in_some_classics():
    # 登高: tones perfect, but 灰韵 split in Mandarin: 回/杯 (ei) no longer rhyme with 来/台 (ai)
    deng_gao = ("登高\n风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。"
                "万里悲秋常作客，百年多病独登台。艰难苦恨繁霜鬓，潦倒新停浊酒杯。")
    scores = score_poem(shi("qilv", "登高"), deng_gao)
    assert scores["tone_pattern"] == 1.0
    assert scores["rhythm"] == pytest.approx(1 / 3)
    # 春望: 簪 (zēn in 侵韵, now zān) no longer rhymes with 深 心 金
    chun_wang = "春望\n国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。"
    scores = score_poem(shi("wulv", "春望"), chun_wang)
    assert scores["tone_pattern"] == 1.0
    assert scores["rhythm"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- broken poems


def test_missing_row_loses_rows_lengths_rhyme_and_tones():
    scores = score_poem(shi("wujue", "登鹳雀楼"), "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目。")
    assert scores["row_number"] == pytest.approx(0.75)
    assert scores["words_per_row"] == pytest.approx(0.75)
    assert scores["rhythm"] == 0.0  # row 4 is missing, so row 2 rhymes with nothing
    assert scores["tone_pattern"] == pytest.approx(12 / 16)
    assert scores["title"] == 1.0


def test_extra_row_costs_row_number_and_words_per_row_only():
    scores = score_poem(shi("wujue", "登鹳雀楼"), DENG_GUAN_QUE_LOU + "\n千里共此楼。")
    assert scores["row_number"] == pytest.approx(0.75)
    assert scores["words_per_row"] == pytest.approx(4 / 5)
    assert scores["rhythm"] == scores["tone_pattern"] == 1.0


def test_wrong_length_row_is_not_tone_scored():
    text = "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里之目，更上一层楼。"
    scores = score_poem(shi("wujue", "登鹳雀楼"), text)
    assert scores["words_per_row"] == pytest.approx(0.75)
    assert scores["tone_pattern"] == pytest.approx(12 / 16)  # the 6-character row's 4 fixed slots are lost
    assert scores["rhythm"] == 1.0


def test_broken_rhyme_and_broken_tones_and_wrong_title():
    no_rhyme = score_poem(shi("wujue", "登鹳雀楼"), "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层山。")
    assert no_rhyme["rhythm"] == 0.0 and no_rhyme["tone_pattern"] == 1.0  # 山 is level: only the rhyme breaks
    bad_tone = score_poem(shi("wujue", "登鹳雀楼"), "登鹳雀楼\n白日依山尽，黄河入海去。\n欲穷千里目，更上一层楼。")
    assert bad_tone["tone_pattern"] < 1.0 and bad_tone["rhythm"] == 0.0  # 去: oblique and not rhyming
    wrong_title = score_poem(shi("wujue", "登楼"), DENG_GUAN_QUE_LOU)
    assert wrong_title["title"] == 0.0 and wrong_title["score"] == pytest.approx(0.8)


def test_prose_is_not_a_poem():
    scores = score_poem(shi("qijue", "春日"), "春天来了，公园里的花都开了，很多人去散步，大家都很开心。")
    assert scores["row_number"] == 1.0  # four clauses: the row count alone is met
    assert scores["words_per_row"] == 0.0 and scores["tone_pattern"] == 0.0 and scores["title"] == 0.0


# --------------------------------------------------------------------------- tones: the entering tone


def test_entering_tone_characters_are_read_oblique():
    for char in "一不白十国竹独出石节":
        assert tone_classes(char) == [OBLIQUE], char
    assert mandarin_classes("白十国竹独") == [LEVEL] * 5  # Mandarin alone gets them wrong
    for char in "盐潜旁":  # classical level characters stay level
        assert tone_classes(char) == [LEVEL], char
    assert tone_classes("施") == ["中"]  # shī/shì: used both ways in Tang verse, so it fits either slot


def test_without_the_entering_tone_table_a_perfect_poem_loses_points(monkeypatch):
    monkeypatch.setattr(tones_module, "CLASSICALLY_OBLIQUE", frozenset())
    scores = score_poem(shi("wujue", "登鹳雀楼"), DENG_GUAN_QUE_LOU)
    assert scores["tone_pattern"] == pytest.approx(15 / 16)  # 一 in 更上一层楼 read yī, level


def test_patterns_and_alignment():
    patterns = shi_patterns("七言律诗")
    assert len(patterns) == 4 and all(len(p.rows) == 8 and p.lengths == [7] * 8 for p in patterns)
    assert patterns[0].rows[:4] == ("中平中仄平平仄", "中仄平平中仄平", "中仄中平平仄仄", "中平中仄仄平平")
    assert patterns[0].rhyme_sets == ((1, 3, 5, 7),)
    assert align_rows([5, 5, 9, 5], [5, 5, 5, 5]) == [(0, 0, True), (1, 1, True), (2, 2, False), (3, 3, True)]
    assert align_rows([5, 5, 5, 5, 5], [5, 5, 5, 5]) == [(0, 0, True), (1, 1, True), (2, 2, True), (3, 3, True)]
    assert align_rows([5, 6, 5], [5, 5]) == [(0, 0, True), (2, 1, True)]  # an extra row in the middle
    assert align_rows([4, 6, 2], [6, 6]) == [(0, 0, False), (1, 1, True)]
    assert zh_rhyme_groups("斜") >= {"麻"} and zh_rhyme_groups("a") == frozenset()
    with pytest.raises(ValueError, match="unknown classical form"):
        shi_patterns("sonnet")


# --------------------------------------------------------------------------- ci


RU_MENG_LING = "如梦令\n常记溪亭日暮，沉醉不知归路。兴尽晚回舟，误入藕花深处。争渡，争渡，惊起一滩鸥鹭。"
YU_MEI_REN = ("虞美人\n春花秋月何时了？往事知多少。小楼昨夜又东风，故国不堪回首月明中。"
              "雕栏玉砌应犹在，只是朱颜改。问君能有几多愁？恰似一江春水向东流。")


def test_famous_ci_get_full_marks():
    assert rounded(score_poem(ci("如梦令"), RU_MENG_LING)) == FULL
    # 虞美人 changes rhyme every two rows (了/少, 风/中, 在/改, 愁/流): the learned rhyme sets follow it
    assert rounded(score_poem(ci("虞美人"), YU_MEI_REN)) == FULL


def test_ci_title_may_carry_a_subtitle_and_tune_aliases_resolve():
    text = RU_MENG_LING.replace("如梦令\n", "如梦令·春晚\n")
    assert score_poem(ci("如梦令"), text)["title"] == 1.0
    assert canonical_tune("《念奴娇》") == canonical_tune("念奴娇·赤壁怀古") == "念奴娇"
    assert score_poem(ci("如梦令"), RU_MENG_LING.replace("如梦令\n", "浣溪沙\n"))["title"] == 0.0


def test_ci_modern_rhyme_limits():
    # 卜算子·咏梅: 雨 (ü) no longer rhymes with 主 妒 故 (u); tones are perfect
    text = "卜算子·咏梅\n驿外断桥边，寂寞开无主。已是黄昏独自愁，更著风和雨。无意苦争春，一任群芳妒。零落成泥碾作尘，只有香如故。"
    scores = score_poem(ci("卜算子"), text)
    assert scores["tone_pattern"] == 1.0 and scores["rhythm"] == pytest.approx(2 / 3)


def test_broken_ci_loses_the_right_points():
    # 如梦令 without its doubled 争渡: two rows missing, the rest aligned by their lengths
    text = "如梦令\n常记溪亭日暮，沉醉不知归路。兴尽晚回舟，误入藕花深处。惊起一滩鸥鹭。"
    scores = score_poem(ci("如梦令"), text)
    assert scores["row_number"] == pytest.approx(5 / 7)
    assert scores["words_per_row"] == pytest.approx(5 / 7)
    assert scores["rhythm"] == pytest.approx(3 / 5)  # 2 of the 6 rhyme rows are gone
    assert scores["title"] == 1.0
    # a 如梦令 poem handed in for 浣溪沙 (six rows of seven characters) fits nowhere
    wrong_tune = score_poem(ci("浣溪沙"), RU_MENG_LING.replace("如梦令\n", "浣溪沙\n"))
    assert wrong_tune["words_per_row"] == 0.0 and wrong_tune["tone_pattern"] == 0.0


def test_tune_table_covers_the_common_tunes():
    tunes = known_tunes()
    for tune in ("浣溪沙", "水调歌头", "鹧鸪天", "菩萨蛮", "满江红", "西江月", "念奴娇", "沁园春", "如梦令", "卜算子"):
        assert tune in tunes
    assert [len(row) for row in ci_patterns("如梦令")[0].rows] == [6, 6, 5, 6, 2, 2, 6]
    assert [len(row) for row in ci_patterns("浣溪沙")[0].rows] == [7] * 6
    assert ci_patterns("菩萨蛮")[0].rhyme_sets == ((0, 1), (2, 3), (4, 5), (6, 7))
    with pytest.raises(ValueError, match="unknown ci tune"):
        score_poem(ci("不存在的词牌"), "x")
    with pytest.raises(ValueError, match="needs a 'tune'"):
        score_poem({"form": "ci"}, "x")
