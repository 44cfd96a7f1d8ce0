"""build-pairs: best against worst per prompt, the paper's four scenarios, drops and bad input."""

from __future__ import annotations

import json
import random

import pytest

from dpo3d.data.records import RecordError
from dpo3d.pairs.building import PairConfig, build_pairs, read_candidates

PROMPT = [{"role": "user", "content": "What is 2+2?"}]


def cand(id_, index, score, source="policy", **extra):
    return {
        "id": id_,
        "prompt": PROMPT,
        "completion": f"{source} answer {index} to {id_}",
        "sample_index": index,
        "source": source,
        "score": score,
        "answer": "4",
        "reference": f"reference solution of {id_}: \\boxed{{4}}",
        "meta": {"level": 1},
        "verdict": {"status": "x"},
        **extra,
    }


def write(tmp_path, name, records):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def pairs_of(tmp_path, config=PairConfig(), **files):
    paths = [write(tmp_path, f"{name}.jsonl", records) for name, records in files.items()]
    pairs, stats = build_pairs(read_candidates(paths), config)
    return {p["id"]: p for p in pairs}, stats


POLICY = [
    cand("a", 0, 1.0), cand("a", 1, 0.0), cand("a", 2, 1.0), cand("a", 3, 0.0),  # mixed: kept
    cand("b", 0, 1.0), cand("b", 1, 1.0),  # all right: dropped in scenario 1, no rejected in 2
    cand("c", 0, 0.0), cand("c", 1, 0.0),  # all wrong
]
WEAK = [cand("a", 0, 0.0, "weak"), cand("b", 0, 0.0, "weak"), cand("b", 1, 1.0, "weak"), cand("c", 0, 1.0, "weak")]


def test_scenario_1_on_policy_best_vs_worst(tmp_path):
    pairs, stats = pairs_of(tmp_path, policy=POLICY)
    assert list(pairs) == ["a"]
    pair = pairs["a"]
    # ties: the lowest sample_index wins on both sides
    assert pair["chosen"] == "policy answer 0 to a" and pair["rejected"] == "policy answer 1 to a"
    assert (pair["chosen_score"], pair["rejected_score"]) == (1.0, 0.0)
    assert (pair["chosen_source"], pair["rejected_source"]) == ("policy", "policy")
    assert (pair["chosen_sample_index"], pair["rejected_sample_index"]) == (0, 1)
    assert pair["prompt"] == PROMPT
    assert [u["sample_index"] for u in pair["unseen"]] == [2, 3]
    assert pair["unseen"][0] == {"completion": "policy answer 2 to a", "score": 1.0, "source": "policy", "sample_index": 2}
    # prompt-level fields pass through; the candidate's own do not
    assert pair["answer"] == "4" and pair["meta"] == {"level": 1}
    assert "verdict" not in pair and "completion" not in pair and "score" not in pair
    tokens = [{**c, "completion_tokens": 10 + c["sample_index"], "model": "m"} for c in POLICY]
    pair = pairs_of(tmp_path, policy=tokens)[0]["a"]
    assert pair["model"] == "m" and "completion_tokens" not in pair  # one sample's own detail stays behind
    assert (stats.candidates, stats.groups, stats.kept) == (8, 3, 1)
    assert stats.dropped == {"no score gap": 2}


def test_scenario_2_reference_chosen_policy_rejected(tmp_path):
    config = PairConfig(chosen_from="reference", rejected_from="policy")
    pairs, stats = pairs_of(tmp_path, config, policy=POLICY)
    assert sorted(pairs) == ["a", "c"]  # b: every policy sample is right, no gap to the reference
    pair = pairs["c"]
    assert pair["chosen"] == "reference solution of c: \\boxed{4}" and pair["chosen_source"] == "reference"
    assert pair["chosen_score"] == 1.0 and pair["chosen_sample_index"] is None
    assert pair["rejected"] == "policy answer 0 to c" and pair["rejected_source"] == "policy"
    assert [u["sample_index"] for u in pair["unseen"]] == [1]
    assert [u["sample_index"] for u in pairs["a"]["unseen"]] == [0, 2, 3]  # the policy's best is unseen too
    assert stats.dropped == {"no score gap": 1}


def test_scenario_3_policy_chosen_other_model_rejected(tmp_path):
    config = PairConfig(chosen_from="policy", rejected_from="weak")
    pairs, stats = pairs_of(tmp_path, config, policy=POLICY, weak=WEAK)
    assert sorted(pairs) == ["a", "b"]
    assert pairs["a"]["chosen"] == "policy answer 0 to a" and pairs["a"]["rejected"] == "weak answer 0 to a"
    assert pairs["b"]["rejected"] == "weak answer 0 to b" and pairs["b"]["rejected_source"] == "weak"
    # unseen: every other candidate of the group, whichever model wrote it
    assert [(u["source"], u["sample_index"]) for u in pairs["b"]["unseen"]] == [("policy", 1), ("weak", 1)]
    assert stats.dropped == {"chosen scored below rejected": 1}  # c: the policy was wrong, the weak model right
    assert stats.sources == {"policy": 8, "weak": 4}


def test_scenario_4_reference_chosen_other_model_rejected(tmp_path):
    config = PairConfig(chosen_from="reference", rejected_from="weak")
    pairs, stats = pairs_of(tmp_path, config, policy=POLICY, weak=WEAK)
    assert sorted(pairs) == ["a", "b"]
    assert pairs["b"]["chosen_source"] == "reference" and pairs["b"]["rejected"] == "weak answer 0 to b"
    assert stats.dropped == {"no score gap": 1}


def test_min_gap_on_a_five_point_rubric(tmp_path):
    records = [cand("x", 0, 5), cand("x", 1, 4), cand("y", 0, 5), cand("y", 1, 2), cand("y", 2, 3)]
    pairs, stats = pairs_of(tmp_path, PairConfig(min_gap=2), policy=records)
    assert list(pairs) == ["y"] and pairs["y"]["rejected_sample_index"] == 1
    assert stats.dropped == {"gap below --min-gap": 1}
    pairs, _ = pairs_of(tmp_path, PairConfig(), policy=records)
    assert sorted(pairs) == ["x", "y"]


def test_deterministic_whatever_the_input_order(tmp_path):
    records = [cand(i, k, float(k % 3)) for i in "pqrs" for k in range(8)]
    first, _ = pairs_of(tmp_path, policy=records)
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    second, _ = pairs_of(tmp_path, policy=shuffled)
    for key in first:
        assert {k: v for k, v in first[key].items() if k != "unseen"} == {
            k: v for k, v in second[key].items() if k != "unseen"
        }
        assert first[key]["chosen_sample_index"] == 2 and first[key]["rejected_sample_index"] == 0


def test_drop_reasons(tmp_path):
    records = [cand("one", 0, 1.0), cand("none", 0, 1.0, reference=None), cand("none", 1, 0.0, reference=None)]
    _, stats = pairs_of(tmp_path, policy=records)
    assert stats.dropped == {"a single candidate": 1} and stats.kept == 1
    _, stats = pairs_of(tmp_path, PairConfig(chosen_from="reference"), policy=records)
    assert stats.dropped == {"no reference solution": 1, "no score gap": 1}  # "one" is right: no gap to its reference
    weakless = [cand("a", 0, 1.0), cand("b", 0, 0.0, "weak"), cand("b", 1, 1.0)]
    _, stats = pairs_of(tmp_path, PairConfig(rejected_from="weak"), policy=weakless)
    assert stats.dropped == {"no candidate from weak to reject": 1} and stats.kept == 1
    same = [cand("s", 0, 1.0), {**cand("s", 1, 0.0), "completion": "policy answer 0 to s"}]
    _, stats = pairs_of(tmp_path, policy=same)
    assert stats.dropped == {"chosen and rejected identical": 1}


def test_unknown_source_label_is_a_usage_error(tmp_path):
    with pytest.raises(ValueError, match="--rejected-from wek: no candidate has that source; sources are policy, weak"):
        pairs_of(tmp_path, PairConfig(rejected_from="wek"), policy=POLICY, weak=WEAK)
    with pytest.raises(ValueError, match="min-gap"):
        PairConfig(min_gap=-1)


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"id": "a", "prompt": "p", "completion": "c"}, ":1: missing field 'score'"),
        ({"id": "a", "prompt": "p", "completion": "c", "score": "high"}, ":1: field 'score' should be a number"),
        ({"id": "a", "prompt": "p", "completion": "c", "score": None}, ":1: field 'score' should be a number"),
        ({"prompt": "p", "completion": "c", "score": 1}, ":1: missing field 'id'"),
        ({"id": ["a"], "prompt": "p", "completion": "c", "score": 1}, ":1: field 'id' should be a string"),
        ({"id": "a", "completion": "c", "score": 1}, ":1: missing field 'prompt'"),
        ({"id": "a", "prompt": "p", "completion": "c", "score": 1, "source": 3}, ":1: field 'source' should be a string"),
    ],
)
def test_bad_candidates(tmp_path, record, problem):
    path = write(tmp_path, "bad.jsonl", [record])
    with pytest.raises(RecordError) as err:
        read_candidates([path])
    assert str(err.value).startswith(str(path) + problem)


def test_the_same_file_twice_is_caught(tmp_path):
    path = write(tmp_path, "policy.jsonl", POLICY[:2])
    with pytest.raises(RecordError, match=r"policy.jsonl:1: duplicate candidate \(id 'a', source 'policy', sample_index 0\) first seen at .*policy.jsonl:1"):
        read_candidates([path, path])
    empty = write(tmp_path, "empty.jsonl", [])
    with pytest.raises(RecordError, match="empty.jsonl: empty input"):
        read_candidates([path, empty])
    with pytest.raises(ValueError, match="stdin"):
        read_candidates(["-", "-"])


def test_candidates_the_judge_could_not_score_are_left_out(tmp_path):
    from dpo3d.pairs.building import build_pairs, read_candidates

    rows = [
        {"id": "a", "prompt": "p", "completion": "good", "score": 5.0, "source": "m", "sample_index": 0},
        {"id": "a", "prompt": "p", "completion": "??", "score": None, "judge": "llm:j",
         "verdict": {"reply": "hmm", "error": "no score 1-5 found"}, "source": "m", "sample_index": 1},
        {"id": "a", "prompt": "p", "completion": "bad", "score": 1.0, "source": "m", "sample_index": 2},
    ]
    path = tmp_path / "judged.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, stats = build_pairs(read_candidates([path]))
    assert stats.unscored == 1 and stats.candidates == 2
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("good", "bad")]
    assert pairs[0]["unseen"] == []
    # a null score without a judge error is still bad input, and so is the old field for it
    for record in ({**rows[0], "score": None}, {**rows[0], "score": None, "judge_error": "no score"}):
        path.write_text(json.dumps(record) + "\n")
        with pytest.raises(RecordError, match=r"judged.jsonl:1: field 'score' should be a number, got null"):
            read_candidates([path])
