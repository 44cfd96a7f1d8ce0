"""`eval-math` and `eval-poem` through the command layer: scoring given completions, and
generating with tiny random models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dpo3d.judges.rubric import DEFAULT_RUBRIC
from dpo3d_cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    for part in parts:
        assert part in message


def test_help_teaches():
    for name, flags in (
        ("eval-math", ("--model", "--completions", "--data", "--limit", "--seed", "-n", "--temperature",
                       "--max-new-tokens", "--batch-size", "--out", "--summary", "--judge", "--base-url",
                       "--judge-model")),
        ("eval-poem", ("--model", "--completions", "--data", "--limit", "--max-new-tokens", "--batch-size",
                       "--out", "--summary")),
    ):
        result = run(name, "--help")
        assert result.exit_code == 0, result.output
        for flag in flags:
            assert flag in result.output
        assert "Example:" in result.output and "[bold]" not in result.output


# --------------------------------------------------------------------------- eval-math on given completions

MATH = [
    # base: 2 of 3 right (level 1 both right, level 2 wrong); dpo: 1 of 3 right, one with no answer
    {"id": "m1", "source": "base", "prompt": "1+1?", "answer": "2", "completion": "So $\\boxed{2}$.",
     "meta": {"level": 1, "type": "Algebra"}},
    {"id": "m2", "source": "base", "prompt": "half of 1?", "answer": "\\frac{1}{2}", "completion": "It is $\\boxed{0.5}$",
     "meta": {"level": 1, "type": "Prealgebra"}},
    {"id": "m3", "source": "base", "prompt": "3*3?", "answer": "9", "completion": "The answer is $\\boxed{6}$.",
     "meta": {"level": 2, "type": "Algebra"}},
    {"id": "m1", "source": "dpo", "prompt": "1+1?", "answer": "2", "completion": "\\boxed{3}",
     "meta": {"level": 1, "type": "Algebra"}},
    {"id": "m2", "source": "dpo", "prompt": "half of 1?", "answer": "\\frac{1}{2}", "completion": "I am not sure.",
     "meta": {"level": 1, "type": "Prealgebra"}},
    {"id": "m3", "source": "dpo", "prompt": "3*3?", "answer": "9", "completion": "\\boxed{9}",
     "meta": {"level": 2, "type": "Algebra"}},
]


def test_eval_math_scores_completions_side_by_side(tmp_path):
    data = write_jsonl(tmp_path / "answers.jsonl", MATH)
    out, summary = tmp_path / "judged.jsonl", tmp_path / "summary.json"
    result = run("eval-math", "--completions", data, "--out", str(out), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    judged = read_jsonl(out)
    assert [r["correct"] for r in judged] == [True, True, False, False, False, True]
    assert judged[4]["verdict"]["status"] == "no_answer"
    models = json.loads(summary.read_text())["models"]
    base, dpo = models["base"], models["dpo"]
    assert base["accuracy"] == pytest.approx(2 / 3) and dpo["accuracy"] == pytest.approx(1 / 3)
    assert base["by_level"]["1"]["accuracy"] == 1.0 and base["by_level"]["2"]["accuracy"] == 0.0
    assert dpo["by_level"]["1"]["accuracy"] == 0.0 and dpo["by_level"]["2"]["accuracy"] == 1.0
    assert base["by_subject"]["Algebra"]["accuracy"] == 0.5 and dpo["by_subject"]["Prealgebra"]["accuracy"] == 0.0
    assert dpo["no_answer"] == pytest.approx(1 / 3) and base["no_answer"] == 0.0
    # the table: one column per model, a row per level and subject; accuracy with its Wilson interval
    # (2 of 3 mirrors 1 of 3: [1 - 0.792, 1 - 0.0615])
    for text in ("base", "dpo", "66.7% [20.8, 93.9] (2/3)", "33.3% [6.1, 79.2] (1/3)", "level 1", "level 2", "Prealgebra", "no answer"):
        assert text in result.stderr
    assert "share 5" not in result.stderr


def test_eval_math_records_without_source_take_the_file_name(tmp_path):
    records = [{k: v for k, v in r.items() if k != "source"} for r in MATH[:2]]
    data = write_jsonl(tmp_path / "run7.jsonl", records)
    summary = tmp_path / "s.json"
    result = run("eval-math", "-c", data, "--summary", str(summary), "--limit", "1")
    assert result.exit_code == 0, result.output
    models = json.loads(summary.read_text())["models"]
    assert list(models) == ["run7"] and models["run7"]["problems"] == 1 and models["run7"]["accuracy"] == 1.0


def test_eval_math_llm_judge_shares(tmp_path, monkeypatch):
    # the real config, a stand-in judge (no server): what eval-math hands over, and what it does with replies
    import dpo3d.judges.llm_judge as llm_judge

    seen = {}

    class LLMJudge:
        def __init__(self, config, client=None):
            seen["config"] = config

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen["closed"] = True

        def judge(self, records, on_progress=None):
            scores = {"So $\\boxed{2}$.": 5.0, "It is $\\boxed{0.5}$": 4.0, "The answer is $\\boxed{6}$.": 2.0}
            out = []
            for r in records:
                score = scores.get(r["completion"])
                verdict = {**r, "score": score, "judge": "llm:judge-7b", "verdict": {"reply": f"Score: {score}"}}
                if score is None:
                    verdict["verdict"]["error"] = "no score 1-5 found in the judge's reply"
                out.append(verdict)
                if on_progress:
                    on_progress(1)
            return out

    monkeypatch.setattr(llm_judge, "LLMJudge", LLMJudge)
    monkeypatch.setenv("DPO3D_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "answers.jsonl", MATH)
    out, summary = tmp_path / "judged.jsonl", tmp_path / "s.json"
    result = run("eval-math", "-c", data, "--judge", "llm", "--base-url", "http://localhost:9/v1",
                 "--judge-model", "judge-7b", "--out", str(out), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.base_url, config.model, config.rubric) == ("http://localhost:9/v1", "judge-7b", DEFAULT_RUBRIC)
    assert config.cache_path == tmp_path / "cache" / "llm_judge.sqlite"  # a rerun costs nothing
    judged = read_jsonl(out)
    # the math judge's score stays; the LLM's goes to llm_score
    assert [r["llm_score"] for r in judged] == [5, 4, 2, None, None, None]
    assert [r["score"] for r in judged] == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert {r["judge"] for r in judged} == {"math"} and judged[0]["llm_verdict"] == "Score: 5.0"
    assert judged[3]["llm_error"] == "no score 1-5 found in the judge's reply" and "llm_error" not in judged[0]
    assert seen["closed"]  # the reply cache is closed
    models = json.loads(summary.read_text())["models"]
    assert models["base"]["llm"]["share_5"] == pytest.approx(1 / 3)
    assert models["base"]["llm"]["share_4_or_5"] == pytest.approx(2 / 3)
    assert models["dpo"]["llm"]["judged"] == 0 and models["dpo"]["llm"]["share_5"] is None
    assert "share 5" in result.stderr and "share 4–5" in result.stderr and "33.3%" in result.stderr
    # 1 of the 3 scored: 33.3% with its Wilson interval [6.1, 79.2] (0.0615: worked in test_study)
    assert "33.3% [6.1, 79.2]" in result.stderr
    assert "no score for 3 of 6 answers" in result.stderr


@pytest.mark.parametrize(
    "records, problem",
    [
        ([MATH[0], {k: v for k, v in MATH[1].items() if k != "answer"}], ":2: missing field 'answer'"),
        ([{k: v for k, v in MATH[0].items() if k != "completion"}], ":1: missing field 'completion'"),
        ([], "empty input"),
    ],
)
def test_eval_math_bad_completions_are_one_line_exit_2(tmp_path, records, problem):
    data = write_jsonl(tmp_path / "bad.jsonl", records)
    summary = tmp_path / "s.json"
    result = run("eval-math", "--completions", data, "--summary", str(summary))
    one_line_error(result, problem, data)
    assert not summary.exists()


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--completions", "x.jsonl", "--model", "m"], "not both"),
        (["--completions", "nowhere.jsonl"], "nowhere.jsonl: no such file"),
        (["--judge", "gpt"], "--judge takes 'llm'"),
        (["--judge-model", "j"], "go with --judge llm"),
        (["--judge", "llm", "--judge-model", "j"], "--judge llm needs --base-url"),
        (["--data", "gsm8k:tset"], "unknown dataset 'gsm8k:tset'"),
        (["--data", "gsm8k:test", "-n", "2", "--temperature", "0"], "use -n 1"),
    ],
)
def test_eval_math_bad_flags_are_one_line_exit_2(args, problem):
    one_line_error(run("eval-math", *args), problem)


# --------------------------------------------------------------------------- eval-poem on given completions

JING_YE_SI = "静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
POEMS = [
    {"id": "p1", "source": "base", "form": "wujue", "title": "静夜思", "language": "zh", "prompt": "写一首五言绝句",
     "completion": JING_YE_SI},
    # broken: two of four rows and no title line
    {"id": "p1", "source": "dpo", "form": "wujue", "title": "静夜思", "language": "zh", "prompt": "写一首五言绝句",
     "completion": "床前明月光，疑是地上霜。"},
    {"id": "s1", "source": "base", "language": "en", "subject": "bakery", "keywords": [], "length": 6,
     "min_length": 3, "banned": ["best"], "prompt": "Write a slogan for a bakery.",
     "completion": "Slogan: \"Fresh bread from our bakery daily\""},
]


def test_eval_poem_scores_completions(tmp_path):
    data = write_jsonl(tmp_path / "poems.jsonl", POEMS)
    out, summary = tmp_path / "scored.jsonl", tmp_path / "s.json"
    result = run("eval-poem", "--completions", data, "--out", str(out), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    scored = read_jsonl(out)
    poem, broken, slogan = scored
    assert poem["metrics"]["row_number"] == poem["metrics"]["words_per_row"] == poem["metrics"]["rhythm"] == 1.0
    assert poem["metrics"]["title"] == 1.0 and poem["score"] > 0.9
    assert (broken["metrics"]["row_number"], broken["metrics"]["words_per_row"], broken["metrics"]["title"]) == (
        0.5, 0.5, 0.0)
    assert broken["score"] < 0.5
    assert slogan["metrics"] == {"word_count": 1.0, "content": 1.0}
    models = json.loads(summary.read_text())["models"]
    base = models["base"]
    assert base["count"] == 2 and list(base["by_form"]) == ["wujue", "slogan-en"]
    # the overall score is the mean of the two completions' scores; title only from the poem
    assert base["metrics"]["score"] == pytest.approx((poem["score"] + 1.0) / 2)
    assert base["metrics"]["title"] == 1.0 and base["metrics"]["content"] == 1.0
    assert models["dpo"]["metrics"]["row_number"] == 0.5
    assert base["by_task"]["poem"]["metrics"]["score"] == pytest.approx(poem["score"])
    # one table for the poems (both models), one for the slogans (base only)
    poems_table, slogans_table = result.stderr.split("eval-poem: slogans")
    for text in ("eval-poem: poems", "base", "dpo", "rows", "words", "rhythm", "tone", "title", "0.500", "score"):
        assert text in poems_table
    assert "base" in slogans_table and "dpo" not in slogans_table and "content" in slogans_table


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"id": "x", "title": "t", "completion": "c"}, ":2: neither a poem record"),
        ({"id": "x", "form": "sonnet", "completion": "c"}, ":2: poem record: unknown form 'sonnet'"),
        ({"id": "x", "form": "haiku", "title": "T"}, ":2: missing field 'completion'"),
    ],
)
def test_eval_poem_bad_records_are_one_line_exit_2(tmp_path, record, problem):
    data = write_jsonl(tmp_path / "bad.jsonl", [POEMS[0], record])
    out = tmp_path / "out.jsonl"
    one_line_error(run("eval-poem", "--completions", data, "--out", str(out)), problem, data)
    assert not out.exists()


def test_eval_poem_unknown_data_name():
    one_line_error(run("eval-poem", "--data", "poems:tset"), "unknown poem data 'poems:tset'", "poems:english-test")


# --------------------------------------------------------------------------- generating with tiny models


@pytest.fixture
def two_tiny_models(tmp_path, tiny_model_dir):
    """The tiny model under a second name: the same weights, so the same greedy answers."""
    copy = tmp_path / "tiny-copy"
    copy.symlink_to(tiny_model_dir, target_is_directory=True)
    return str(tiny_model_dir), str(copy)


def test_eval_math_generates_with_each_model(tmp_path, two_tiny_models):
    prompts = write_jsonl(tmp_path / "problems.jsonl", [
        {"id": "q1", "question": "What is 2 + 3?", "answer": "5", "meta": {"level": 1, "type": "Arithmetic"}},
        {"id": "q2", "question": "What is 4 * 4?", "answer": "16", "meta": {"level": 2, "type": "Arithmetic"}},
        {"id": "q3", "question": "Unused.", "answer": "1"},
    ])
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    first, second = two_tiny_models
    result = run("eval-math", "--model", first, "--model", second, "--data", prompts, "--limit", "2",
                 "--max-new-tokens", "4", "-b", "2", "--out", str(out), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    assert [(r["source"], r["id"]) for r in records] == [("tiny", "q1"), ("tiny", "q2"), ("tiny-copy", "q1"),
                                                         ("tiny-copy", "q2")]
    assert all(r["completion_tokens"] <= 4 and "verdict" in r for r in records)
    # greedy: the same weights give the same answers
    assert [r["completion"] for r in records[:2]] == [r["completion"] for r in records[2:]]
    saved = json.loads(summary.read_text())
    assert list(saved["models"]) == ["tiny", "tiny-copy"] and saved["temperature"] == 0.0 and saved["n"] == 1
    for label in ("tiny", "tiny-copy"):
        assert saved["models"][label]["problems"] == 2 and 0.0 <= saved["models"][label]["accuracy"] <= 1.0
        assert list(saved["models"][label]["by_level"]) == ["1", "2"]
        assert saved["generation"][label]["new_tokens"] <= 8
    assert "generate tiny" in result.stderr and "tiny-copy" in result.stderr


def test_eval_math_sampling_several_per_problem(tmp_path, tiny_model_dir):
    prompts = write_jsonl(tmp_path / "problems.jsonl", [{"id": "q1", "question": "2 + 3?", "answer": "5"}])
    out = tmp_path / "out.jsonl"
    result = run("eval-math", "--model", str(tiny_model_dir), "--data", prompts, "-n", "3", "--max-new-tokens", "3",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    assert [r["sample_index"] for r in read_jsonl(out)] == [0, 1, 2]
    assert "1 × 3" in result.stderr


def test_eval_math_prompts_need_an_answer(tmp_path, tiny_model_dir):
    prompts = write_jsonl(tmp_path / "problems.jsonl", [{"id": "q1", "question": "2 + 3?"}])
    one_line_error(run("eval-math", "--model", str(tiny_model_dir), "--data", prompts), ":1: missing field 'answer'")


@pytest.mark.parametrize("data, forms", [("poems:english-test", {"haiku", "limerick"}), ("slogans:test", {"slogan-zh"})])
def test_eval_poem_generates_and_scores(tmp_path, tiny_model_dir, data, forms):
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    result = run("eval-poem", "--model", str(tiny_model_dir), "--data", data, "--limit", "2", "--max-new-tokens", "6",
                 "--out", str(out), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    assert len(records) == 2 and {r["source"] for r in records} == {"tiny"}
    # plain-text prompts went through the chat template
    assert all(r["prompt"][0]["role"] == "user" for r in records)
    for record in records:
        assert 0.0 <= record["score"] <= 1.0 and record["metrics"]
    saved = json.loads(summary.read_text())
    assert set(saved["models"]["tiny"]["by_form"]) == forms and saved["models"]["tiny"]["count"] == 2
    if len(forms) > 1:  # a row per form under the model's row
        assert all(form in result.stderr for form in forms)
