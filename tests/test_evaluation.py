"""The evaluation summaries on small fixed records, against numbers worked out by hand."""

from __future__ import annotations

import pytest

from dpo3d.data.records import RecordError
from dpo3d.judges import evaluation as ev


def judged(id_, source, correct, level=None, type_=None, status=None, llm=...):
    record = {
        "id": id_, "source": source, "correct": correct, "score": 1.0 if correct else 0.0,
        "verdict": {"status": status or ("correct" if correct else "wrong")},
        "meta": {"level": level, "type": type_},
    }
    if llm is not ...:
        record["llm_score"] = llm
    return record


# model a: 5 problems, 3 right; level 1: 2/2, level 3: 1/2, level 5: 0/1;
# Algebra: 2/3, Geometry: 1/2; one answer missing
MODEL_A = [
    judged("p1", "a", True, 1, "Algebra", llm=5),
    judged("p2", "a", True, 1, "Geometry", llm=4),
    judged("p3", "a", True, 3, "Algebra", llm=5),
    judged("p4", "a", False, 3, "Algebra", llm=2),
    judged("p5", "a", False, 5, "Geometry", status="no_answer", llm=None),
]
# model b: 2 problems, 0 right, no LLM scores
MODEL_B = [judged("p1", "b", False, 1, "Algebra"), judged("p2", "b", False, 1, "Geometry", status="no_answer")]


def test_math_summary_by_hand():
    result = ev.math_summary(MODEL_A + MODEL_B)
    assert list(result["models"]) == ["a", "b"]
    a = result["models"]["a"]
    assert (a["problems"], a["completions"], a["correct"]) == (5, 5, 3)
    assert a["accuracy"] == pytest.approx(0.6)
    assert a["no_answer"] == pytest.approx(0.2)
    assert list(a["by_level"]) == ["1", "3", "5"]
    assert {k: (v["correct"], v["count"]) for k, v in a["by_level"].items()} == {"1": (2, 2), "3": (1, 2), "5": (0, 1)}
    assert a["by_level"]["3"]["accuracy"] == pytest.approx(0.5)
    assert {k: (v["correct"], v["count"]) for k, v in a["by_subject"].items()} == {"Algebra": (2, 3), "Geometry": (1, 2)}
    assert a["by_subject"]["Algebra"]["accuracy"] == pytest.approx(2 / 3)
    # LLM scores 5, 4, 5, 2 and one missing: shares over the four it gave
    llm = a["llm"]
    assert (llm["judged"], llm["unscored"]) == (4, 1)
    assert llm["share_5"] == pytest.approx(0.5)
    assert llm["share_4_or_5"] == pytest.approx(0.75)
    # their 95% Wilson intervals over the 4 judged, by hand (z = 1.96, z² = 3.8415, 1 + z²/n = 1.9604):
    # 2 of 4: centre (0.5 + 0.4802)/1.9604 = 0.5, half 0.9998·sqrt(0.0625 + 0.0600) = 0.3500 → [0.150, 0.850]
    # 3 of 4: centre (0.75 + 0.4802)/1.9604 = 0.6275, half 0.9998·sqrt(0.0469 + 0.0600) = 0.3269 → [0.301, 0.954]
    assert llm["share_5_interval"] == pytest.approx([0.150, 0.850], abs=5e-4)
    assert llm["share_4_or_5_interval"] == pytest.approx([0.301, 0.954], abs=5e-4)
    assert llm["mean"] == pytest.approx(4.0)
    assert llm["counts"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 2}
    b = result["models"]["b"]
    assert b["accuracy"] == 0.0 and b["no_answer"] == pytest.approx(0.5) and "llm" not in b
    assert b["by_level"] == {"1": {"count": 2, "correct": 0, "accuracy": 0.0}}


def test_math_summary_several_samples_and_no_meta():
    # GSM8K-like records: no level or subject; two samples per problem, 3 of 4 right
    records = [
        {"id": "q1", "source": "m", "score": 1.0, "sample_index": 0},
        {"id": "q1", "source": "m", "score": 1.0, "sample_index": 1},
        {"id": "q2", "source": "m", "score": 0.0, "sample_index": 0},
        {"id": "q2", "model": "ignored", "source": "m", "score": 1.0, "sample_index": 1},
    ]
    summary = ev.math_summary(records)["models"]["m"]
    assert (summary["problems"], summary["completions"], summary["accuracy"]) == (2, 4, 0.75)
    assert summary["by_level"] == {} and summary["by_subject"] == {} and summary["no_answer"] == 0.0
    # records naming no model fall under the default label
    assert list(ev.math_summary([{"id": "x", "correct": False}], default_model="run1")["models"]) == ["run1"]


def test_llm_share_levels_levels_as_numbers():
    # levels sort numerically (10 after 9), and a score of 3 is neither 5 nor 4-or-5
    records = [judged(str(i), "m", i % 2 == 0, level=level, llm=3) for i, level in enumerate([10, 9, 2])]
    summary = ev.math_summary(records)["models"]["m"]
    assert list(summary["by_level"]) == ["2", "9", "10"]
    assert summary["llm"]["share_5"] == 0.0 and summary["llm"]["share_4_or_5"] == 0.0
    # none of 3: the interval still has width (Wilson: [0, z²/(n + z²)] = [0, 0.562])
    assert summary["llm"]["share_5_interval"] == pytest.approx([0.0, 3.8415 / 6.8415], abs=5e-4)


JING_YE_SI = "静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"


def test_score_poem_records_poems_and_slogans():
    records = [
        {"id": "p", "form": "wujue", "title": "静夜思", "completion": JING_YE_SI},
        # two of four rows, no title: row_number 1 - 2/4, words_per_row 2/4, title 0
        {"id": "q", "form": "五言绝句", "title": "静夜思", "completion": "床前明月光，疑是地上霜。"},
        {"id": "s", "language": "en", "subject": "bakery", "keywords": [], "length": 6, "min_length": 3,
         "banned": ["best"], "prompt": "Write a slogan for a bakery.", "completion": "Fresh bread from our bakery daily"},
    ]
    poem, broken, slogan = ev.score_poem_records(records)
    assert poem["task"] == "poem" and slogan["task"] == "slogan"
    assert list(poem["metrics"]) == ["row_number", "words_per_row", "rhythm", "tone_pattern", "title"]
    assert poem["metrics"]["row_number"] == poem["metrics"]["words_per_row"] == poem["metrics"]["title"] == 1.0
    assert poem["metrics"]["rhythm"] == 1.0  # 霜 and 乡 rhyme
    assert poem["score"] == pytest.approx(sum(poem["metrics"].values()) / 5)
    assert (broken["metrics"]["row_number"], broken["metrics"]["words_per_row"], broken["metrics"]["title"]) == (
        0.5, 0.5, 0.0)
    # 5 words within 3..6, names the bakery, no banned word, not the prompt
    assert slogan["metrics"] == {"word_count": 1.0, "content": 1.0} and slogan["score"] == 1.0
    assert records[0].get("metrics") is None  # the inputs are left alone


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"id": "x", "title": "t", "completion": "c"}, "neither a poem record"),
        ({"id": "x", "form": "sonnet", "completion": "c"}, "unknown form 'sonnet'"),
        ({"id": "x", "form": "haiku"}, "missing field 'completion'"),
    ],
)
def test_unscorable_records_name_their_line(record, problem):
    good = {"id": "ok", "form": "haiku", "completion": "a\nb\nc"}
    with pytest.raises(RecordError) as err:
        ev.score_poem_records([good, record], "c.jsonl", lines=[1, 4])
    assert str(err.value).startswith("c.jsonl:4: ") and problem in str(err.value)


def scored(source, form, score, **metrics):
    return {"source": source, "form": form, "metrics": metrics, "score": score}


def test_poem_summary_by_hand():
    records = [
        scored("a", "wujue", 0.8, row_number=1.0, words_per_row=1.0, rhythm=0.5, tone_pattern=0.5, title=1.0),
        scored("a", "wujue", 0.4, row_number=0.5, words_per_row=0.5, rhythm=0.0, tone_pattern=0.5, title=0.5),
        scored("a", "haiku", 0.5, row_number=1.0, words_per_row=0.0, title=0.5),
        {"source": "a", "language": "en", "subject": "tea", "length": 6, "metrics": {"word_count": 1.0, "content": 0.0},
         "score": 0.5},
        scored("b", "haiku", 1.0, row_number=1.0, words_per_row=1.0, title=1.0),
    ]
    summary = ev.poem_summary(records)["models"]
    a = summary["a"]
    assert a["count"] == 4
    # each metric over the records it applies to: rhythm and tone only the two wujue, title three poems
    assert a["metrics"] == pytest.approx({
        "row_number": 2.5 / 3, "words_per_row": 1.5 / 3, "rhythm": 0.25, "tone_pattern": 0.5, "title": 2 / 3,
        "word_count": 1.0, "content": 0.0, "score": 2.2 / 4,
    })
    assert list(a["metrics"]) == ["row_number", "words_per_row", "rhythm", "tone_pattern", "title",
                                  "word_count", "content", "score"]
    assert list(a["by_form"]) == ["wujue", "haiku", "slogan-en"]
    assert a["by_form"]["wujue"]["count"] == 2
    assert a["by_form"]["wujue"]["metrics"] == pytest.approx({
        "row_number": 0.75, "words_per_row": 0.75, "rhythm": 0.25, "tone_pattern": 0.5, "title": 0.75, "score": 0.6,
    })
    assert summary["b"]["metrics"] == {"row_number": 1.0, "words_per_row": 1.0, "title": 1.0, "score": 1.0}


def test_eval_config_is_greedy_by_default():
    assert ev.eval_config().temperature == 0.0 and ev.eval_config().n == 1
    assert ev.eval_config(n=4).temperature == 0.7
    with pytest.raises(ValueError, match="use -n 1"):
        ev.eval_config(n=2, temperature=0.0)


def test_poem_data_names():
    assert ev.resolve_poem_data("poems:english-test").name == "english_test.jsonl"
    assert ev.resolve_poem_data("slogans:test").parent.name == "slogans"
    with pytest.raises(ValueError, match="unknown poem data 'poems:tset'"):
        ev.resolve_poem_data("poems:tset")
    with pytest.raises(RecordError, match="no such file"):
        ev.resolve_poem_data("nowhere/poems.jsonl")


def test_as_chat_wraps_plain_prompts_only():
    assert ev.as_chat({"prompt": "Write."}) == {"prompt": [{"role": "user", "content": "Write."}]}
    messages = [{"role": "user", "content": "Hi"}]
    assert ev.as_chat({"prompt": messages})["prompt"] == messages


def test_limit_counts_problems_not_answers():
    from dpo3d.judges.evaluation import first_problems

    rows = [{"id": "a"}, {"id": "a"}, {"id": "b"}, {"id": "a"}, {"id": "c"}, {"id": "b"}]
    assert first_problems(rows, 2) == [0, 1, 2, 3, 5]  # every answer to a and b, in file order
    assert first_problems(rows, None) == list(range(6))
    assert first_problems([{}, {}, {}], 2) == [0, 1]  # no ids: one problem per record
