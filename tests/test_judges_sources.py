"""The judges, build-pairs and the evaluators' --completions on the data researchers have: a
Parquet file and a `Dataset.save_to_disk` folder (through dpo3d.data.inputs), with exact outputs, a
Parquet row named in errors, and the one Judge interface (checks, streaming, summaries)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dpo3d.data.records import RecordError, Row
from dpo3d.judges.base import Judge, ScoreTally, size_hint
from dpo3d.judges.math_judge import MathJudge, MathJudgeConfig
from dpo3d.judges.rules import poem_judge, slogan_judge
from dpo3d_cli import judge
from dpo3d_cli.app import app

from .test_cli_eval import MATH as ANSWERS  # base: 2 of 3 right; dpo: 1 of 3 right

runner = CliRunner()

SHAPES = ("parquet", "folder")


def run(*args: str):
    return runner.invoke(app, list(args))


def write_source(tmp_path, name: str, rows: list[dict], shape: str) -> str:
    """The rows as ``NAME.parquet`` or a ``NAME`` folder written by ``Dataset.save_to_disk``."""
    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    if shape == "parquet":
        path = tmp_path / f"{name}.parquet"
        dataset.to_parquet(str(path))
    else:
        path = tmp_path / name
        dataset.save_to_disk(str(path))
    return str(path)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def one_line_error(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: {expected}"], result.output


# --------------------------------------------------------------------------- judge math

MATH = [
    {"id": "q1", "prompt": "1+1?", "completion": "So $\\boxed{2}$.", "answer": "2", "sample_index": 0},
    {"id": "q1", "prompt": "1+1?", "completion": "It is $\\boxed{3}$.", "answer": "2", "sample_index": 1},
    {"id": "q2", "prompt": "half of 1?", "completion": "It is $\\boxed{0.5}$", "answer": "\\frac{1}{2}", "sample_index": 0},
    {"id": "q2", "prompt": "half of 1?", "completion": "I do not know.", "answer": "\\frac{1}{2}", "sample_index": 1},
]


@pytest.mark.parametrize("shape", SHAPES)
def test_judge_math_reads_a_table_and_writes_jsonl(tmp_path, shape):
    data = write_source(tmp_path, "cands", MATH, shape)
    out = tmp_path / "judged.jsonl"
    result = run("judge", "math", data, "-o", str(out))
    assert result.exit_code == 0, result.output
    judged = read_jsonl(out)
    assert [r["score"] for r in judged] == [1.0, 0.0, 1.0, 0.0]
    assert [r["verdict"]["status"] for r in judged] == ["correct", "wrong", "correct", "no_answer"]
    assert [(r["id"], r["sample_index"]) for r in judged] == [("q1", 0), ("q1", 1), ("q2", 0), ("q2", 1)]
    assert "judge math: 2/4 right (50.0%); correct 2, wrong 1, no_answer 1" in " ".join(result.stderr.split())


@pytest.mark.parametrize("shape", SHAPES)
def test_judge_math_maps_columns_and_writes_parquet(tmp_path, shape):
    rows = [{"id": r["id"], "response": r["completion"], "gold": r["answer"]} for r in MATH]
    data = write_source(tmp_path, "cands", rows, shape)
    out = tmp_path / "judged.parquet"
    result = run("judge", "math", data, "--columns", "completion=response,answer=gold", "-o", str(out))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column("score").to_pylist() == [1.0, 0.0, 1.0, 0.0]
    assert table.column("completion").to_pylist() == [r["completion"] for r in MATH]
    assert "response" not in table.column_names  # the mapped column is the field now


def test_judge_math_names_the_parquet_row_and_writes_nothing(tmp_path):
    rows = [dict(MATH[0]), {**MATH[1], "answer": None}]
    data = write_source(tmp_path, "cands", rows, "parquet")
    out = tmp_path / "out" / "judged.jsonl"
    result = run("judge", "math", data, "-o", str(out))
    one_line_error(result, f"{data}: row 1: missing field 'answer' (the gold final answer the math judge checks against)")
    assert not out.exists() and not list(tmp_path.glob("out/*"))
    result = run("judge", "math", data, "--columns", "completion=response")
    one_line_error(result, f"{data}: row 0: --columns: no field 'response' (fields: id, prompt, completion, answer, sample_index)")


# --------------------------------------------------------------------------- judge poem / slogan

JING_YE_SI = "静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
POEMS = [
    {"id": "p1", "prompt": "写一首五言绝句《静夜思》", "form": "wujue", "title": "静夜思", "language": "zh",
     "completion": JING_YE_SI},
    # two of four rows and no title line
    {"id": "p1", "prompt": "写一首五言绝句《静夜思》", "form": "wujue", "title": "静夜思", "language": "zh",
     "completion": "床前明月光，疑是地上霜。"},
]
SLOGANS = [
    {"id": "s1", "prompt": "Write a slogan for a bakery, 3-6 words.", "language": "en", "subject": "bakery",
     "keywords": ["bread"], "length": 6, "min_length": 3, "banned": ["best"], "completion": "Fresh bread at our bakery"},
    {"id": "s1", "prompt": "Write a slogan for a bakery, 3-6 words.", "language": "en", "subject": "bakery",
     "keywords": ["bread"], "length": 6, "min_length": 3, "banned": ["best"],
     "completion": "The best cakes you will ever taste in this whole town"},
]


@pytest.mark.parametrize("shape", SHAPES)
def test_judge_poem_reads_a_table(tmp_path, shape):
    data = write_source(tmp_path, "poems", POEMS, shape)
    out = tmp_path / "judged.jsonl"
    result = run("judge", "poem", data, "-o", str(out))
    assert result.exit_code == 0, result.output
    whole, broken = read_jsonl(out)
    assert whole["judge"] == "poem" and whole["verdict"]["row_number"] == whole["verdict"]["title"] == 1.0
    assert (broken["verdict"]["row_number"], broken["verdict"]["words_per_row"], broken["verdict"]["title"]) == (0.5, 0.5, 0.0)
    assert whole["score"] == whole["verdict"]["score"] and broken["score"] == broken["verdict"]["score"]
    mean = (whole["score"] + broken["score"]) / 2
    full = sum(score >= 1.0 for score in (whole["score"], broken["score"]))
    assert f"judge poem: 2 scored, mean {mean:.3f}, full marks {full}" in result.stderr


@pytest.mark.parametrize("shape", SHAPES)
def test_judge_slogan_reads_a_table(tmp_path, shape):
    data = write_source(tmp_path, "slogans", SLOGANS, shape)
    out = tmp_path / "judged.jsonl"
    result = run("judge", "slogan", data, "-o", str(out))
    assert result.exit_code == 0, result.output
    good, bad = read_jsonl(out)
    assert good["verdict"] == {"word_count": 1.0, "content": 1.0, "score": 1.0} and good["score"] == 1.0
    # eleven words for at most six, and a banned word without the subject
    assert bad["verdict"]["word_count"] == pytest.approx(1 - 5 / 6) and bad["verdict"]["content"] < 1.0
    assert bad["score"] == pytest.approx((bad["verdict"]["word_count"] + bad["verdict"]["content"]) / 2)
    assert f"judge slogan: 2 scored, mean {(1.0 + bad['score']) / 2:.3f}, full marks 1" in result.stderr


def test_judge_poem_and_slogan_name_the_parquet_row(tmp_path):
    data = write_source(tmp_path, "poems", [POEMS[0], {**POEMS[1], "form": "sonnet"}], "parquet")
    out = tmp_path / "judged.jsonl"
    result = run("judge", "poem", data, "-o", str(out))
    assert result.exit_code == 2 and f"error: {data}: row 1: poem record: unknown form 'sonnet'" in result.output
    assert not out.exists()
    data = write_source(tmp_path, "slogans", [SLOGANS[0], {**SLOGANS[1], "language": "fr"}], "parquet")
    result = run("judge", "slogan", data, "-o", str(out))
    one_line_error(result, f"{data}: row 1: slogan record: language must be 'zh' or 'en', got 'fr'")
    assert not out.exists()


# --------------------------------------------------------------------------- judge rm


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, tiny_model_dir):
    """A reward model (the tiny LM with a fresh scalar head) saved as `train-rm` saves one."""
    from dpo3d.judges.reward_model import load_reward_model
    from dpo3d.models.loading import save_pretrained

    folder = tmp_path_factory.mktemp("rm") / "tiny-rm"
    model, tokenizer = load_reward_model(str(tiny_model_dir))
    save_pretrained(model, tokenizer, folder)
    return folder


RM_ROWS = [
    {"id": "c", "prompt": [{"role": "user", "content": "Pick a colour."}], "completion": text, "sample_index": i}
    for i, text in enumerate(("Blue.", "I would rather not pick one at all, thank you.", "Red, like a ripe apple."))
]


@pytest.mark.parametrize("shape", SHAPES)
def test_judge_rm_reads_a_table(tmp_path, shape, reward_model_dir):
    from dpo3d.judges.reward_model import load_reward_model, reward_of_records

    model, tokenizer = load_reward_model(str(reward_model_dir))
    expected = reward_of_records(model, tokenizer, RM_ROWS, 128)
    data = write_source(tmp_path, "cands", RM_ROWS, shape)
    out = tmp_path / "judged.jsonl"
    result = run("judge", "rm", data, "--rm", str(reward_model_dir), "--max-length", "128", "-b", "2",
                 "--device", "cpu", "-o", str(out))
    assert result.exit_code == 0, result.output
    judged = read_jsonl(out)
    assert [r["score"] for r in judged] == pytest.approx(expected, abs=1e-5)
    assert [r["verdict"] for r in judged] == [{"reward": r["score"]} for r in judged]
    assert {r["judge"] for r in judged} == {"rm:tiny-rm"}
    assert len(set(expected)) == 3  # three different texts, three different rewards: the order is real
    assert "judge rm: 3 scored, reward mean" in result.stderr


def test_judge_rm_names_the_parquet_row(tmp_path, reward_model_dir):
    data = write_source(tmp_path, "cands", [RM_ROWS[0], {**RM_ROWS[1], "completion": None}], "parquet")
    out = tmp_path / "judged.jsonl"
    result = run("judge", "rm", data, "--rm", str(reward_model_dir), "--device", "cpu", "-o", str(out))
    assert result.exit_code == 2  # (transformers' own loading bar may come first: the app quiets it, not this test)
    assert result.output.strip().splitlines()[-1] == (
        f"error: {data}: row 1: field 'completion' should be a string or a list of chat messages")
    assert not out.exists()


# --------------------------------------------------------------------------- build-pairs


def judged_llm_rows() -> list[dict]:
    """An LLM judge's output as a table holds it: every verdict a {reply, error} struct (error null
    where the reply gave a score); candidate 2 of q1 could not be scored."""
    rows = []
    for id_, scores in (("q1", [5.0, None, 1.0]), ("q2", [3.0, 3.0, 3.0]), ("q3", [2.0, 4.0, 4.0])):
        for index, score in enumerate(scores):
            rows.append({
                "id": id_, "prompt": f"question {id_}", "completion": f"answer {index} to {id_}", "source": "policy",
                "sample_index": index, "score": score, "judge": "llm:j",
                "verdict": {"reply": "hmm" if score is None else f"Score: {int(score)}",
                            "error": "no score 1-5 found in the judge's reply" if score is None else None},
            })
    return rows


@pytest.mark.parametrize("shape", SHAPES)
def test_build_pairs_reads_a_table(tmp_path, shape):
    data = write_source(tmp_path, "judged", judged_llm_rows(), shape)
    out = tmp_path / "pairs.jsonl"
    result = run("build-pairs", data, "-o", str(out))
    assert result.exit_code == 0, result.output
    pairs = read_jsonl(out)
    assert [(p["id"], p["chosen"], p["rejected"], p["chosen_score"], p["rejected_score"]) for p in pairs] == [
        ("q1", "answer 0 to q1", "answer 2 to q1", 5.0, 1.0),
        ("q3", "answer 1 to q3", "answer 0 to q3", 4.0, 2.0),  # a tie at 4: the lower sample_index
    ]
    assert pairs[0]["unseen"] == []  # the unscored candidate is left out, not unseen
    assert [u["sample_index"] for u in pairs[1]["unseen"]] == [2]
    stderr = " ".join(result.stderr.split())
    assert "build-pairs: 8 candidates" in stderr and "no score gap │ 1" in stderr
    assert "(verdict.error) │ 1" in stderr


def test_build_pairs_maps_columns(tmp_path):
    rows = [{"qid": r["id"], "prompt": r["prompt"], "completion": r["completion"], "reward": r["score"]}
            for r in judged_llm_rows() if r["score"] is not None]
    data = write_source(tmp_path, "judged", rows, "parquet")
    result = run("build-pairs", data, "--columns", "id=qid,score=reward")
    assert result.exit_code == 0, result.output
    assert [(p["id"], p["chosen_score"], p["rejected_score"]) for p in map(json.loads, result.stdout.splitlines())] == [
        ("q1", 5.0, 1.0), ("q3", 4.0, 2.0)]


def test_build_pairs_names_the_parquet_row_and_writes_nothing(tmp_path):
    rows = judged_llm_rows()[:3]
    rows[1]["verdict"] = {"reply": "hmm", "error": None}  # a null score the judge did not explain
    data = write_source(tmp_path, "cands", rows, "parquet")
    out = tmp_path / "pairs.jsonl"
    one_line_error(run("build-pairs", data, "-o", str(out)), f"{data}: row 1: field 'score' should be a number, got null")
    assert not out.exists()
    data = write_source(tmp_path, "policy", judged_llm_rows()[:1], "parquet")
    one_line_error(run("build-pairs", data, data, "-o", str(out)),
                   f"{data}: row 0: duplicate candidate (id 'q1', source 'policy', sample_index 0) first seen at {data}: row 0")
    assert not out.exists()


# --------------------------------------------------------------------------- eval-math / eval-poem --completions



@pytest.mark.parametrize("shape", SHAPES)
def test_eval_math_completions_from_a_table(tmp_path, shape):
    data = write_source(tmp_path, "answers", ANSWERS, shape)
    out, summary = tmp_path / "judged.jsonl", tmp_path / "s.json"
    result = run("eval-math", "--completions", data, "--out", str(out), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    assert [r["correct"] for r in read_jsonl(out)] == [True, True, False, False, False, True]
    saved = json.loads(summary.read_text())
    models = saved["models"]
    assert (models["base"]["correct"], models["base"]["completions"]) == (2, 3)
    assert (models["dpo"]["correct"], models["dpo"]["completions"]) == (1, 3)
    assert models["base"]["by_level"] == {"1": {"count": 2, "correct": 2, "accuracy": 1.0},
                                          "2": {"count": 1, "correct": 0, "accuracy": 0.0}}
    assert models["dpo"]["no_answer"] == pytest.approx(1 / 3) and saved["data"] == data


@pytest.mark.parametrize("shape", SHAPES)
def test_eval_math_records_without_source_take_the_source_name(tmp_path, shape):
    rows = [{k: v for k, v in r.items() if k != "source"} for r in ANSWERS[:3]]
    data = write_source(tmp_path, "run7", rows, shape)
    summary = tmp_path / "s.json"
    result = run("eval-math", "-c", data, "--summary", str(summary), "--limit", "2")
    assert result.exit_code == 0, result.output
    models = json.loads(summary.read_text())["models"]
    assert list(models) == ["run7"] and (models["run7"]["problems"], models["run7"]["correct"]) == (2, 2)


@pytest.mark.parametrize("shape", SHAPES)
def test_eval_math_records_without_id_get_the_source_stem_and_row(tmp_path, shape):
    rows = [{k: v for k, v in r.items() if k not in ("id", "source")} for r in ANSWERS[:3]]
    data = write_source(tmp_path, "run7", rows, shape)
    out = tmp_path / "judged.jsonl"
    result = run("eval-math", "-c", data, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert [(r["id"], r["source"], r["correct"]) for r in read_jsonl(out)] == [
        ("run7-0", "run7", True), ("run7-1", "run7", True), ("run7-2", "run7", False)]


def test_eval_math_names_the_parquet_row(tmp_path):
    data = write_source(tmp_path, "answers", [ANSWERS[0], {**ANSWERS[1], "completion": None}], "parquet")
    summary = tmp_path / "s.json"
    result = run("eval-math", "--completions", data, "--summary", str(summary))
    one_line_error(result, f"{data}: row 1: field 'completion' should be a string or a list of chat messages")
    assert not summary.exists()


@pytest.mark.parametrize("shape", SHAPES)
def test_eval_poem_completions_from_a_table(tmp_path, shape):
    rows = [{**POEMS[0], "source": "base"}, {**POEMS[1], "source": "dpo"}]
    data = write_source(tmp_path, "poems", rows, shape)
    out, summary = tmp_path / "scored.jsonl", tmp_path / "s.json"
    result = run("eval-poem", "--completions", data, "--out", str(out), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    whole, broken = read_jsonl(out)
    assert whole["metrics"]["row_number"] == whole["metrics"]["words_per_row"] == whole["metrics"]["title"] == 1.0
    assert (broken["metrics"]["row_number"], broken["metrics"]["words_per_row"], broken["metrics"]["title"]) == (0.5, 0.5, 0.0)
    models = json.loads(summary.read_text())["models"]
    assert models["base"]["metrics"]["score"] == pytest.approx(whole["score"])
    assert models["dpo"]["metrics"]["row_number"] == 0.5 and models["dpo"]["count"] == 1


def test_eval_poem_names_the_parquet_row(tmp_path):
    data = write_source(tmp_path, "poems", [POEMS[0], {**POEMS[1], "form": "sonnet"}], "parquet")
    out = tmp_path / "scored.jsonl"
    result = run("eval-poem", "--completions", data, "--out", str(out))
    assert result.exit_code == 2 and f"error: {data}: row 1: poem record: unknown form 'sonnet'" in result.output
    assert not out.exists()


# --------------------------------------------------------------------------- the Judge interface


def counting(records: list[dict], read: list[int]):
    """The records one at a time, counting in ``read[0]`` how many were taken."""
    for record in records:
        read[0] += 1
        yield record


def test_judges_read_only_as_far_as_their_batch():
    records = [{"completion": f"\\boxed{{{n}}}", "answer": str(n)} for n in range(10)]
    read = [0]
    with MathJudge(MathJudgeConfig(workers=0, chunk_size=3)) as math_judge:
        stream = math_judge.judge(counting(records, read))
        first = next(stream)
        assert first["correct"] and read[0] == 3  # one chunk, not the whole input
        assert len(list(stream)) == 9 and read[0] == 10
    assert math_judge.summary() == "judge math: 10/10 right (100.0%); correct 10"

    poems = [dict(POEMS[0]) for _ in range(5)]
    read = [0]
    rules = poem_judge()
    stream = rules.judge(counting(poems, read))
    next(stream)
    assert read[0] == 1


def test_the_llm_judge_streams_through_a_window_of_requests():
    from types import SimpleNamespace

    from dpo3d.judges.llm_judge import LLMJudge, LLMJudgeConfig

    class Client:
        def __init__(self):
            self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

        def create(self, **kwargs):
            return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content="Score: 4"))])

    records = [{"prompt": f"q{n}", "completion": "a"} for n in range(20)]
    read = [0]
    llm = LLMJudge(LLMJudgeConfig(base_url="http://judge.test/v1", model="j", concurrency=2), client=Client())
    stream = llm.judge(counting(records, read))
    assert next(stream)["verdict"] == {"reply": "Score: 4"}
    assert read[0] == 4  # two running and two waiting: the window, not the input
    assert len(list(stream)) == 19
    assert llm.summary() == "judge llm: 20 judged, mean score 4.00; scores 1:0 2:0 3:0 4:20 5:0; 0 failed; 20 requests, 0 from cache"


def test_checks_name_the_record_and_convert_conversations():
    rules = poem_judge()
    with pytest.raises(RecordError) as err:
        rules.check({**POEMS[0], "form": "ci"}, "poems.parquet", Row(3))
    assert str(err.value) == "poems.parquet: row 3: poem record: a ci needs a 'tune' (词牌) field"
    with pytest.raises(RecordError, match=r"^s.jsonl:2: slogan record: needs an integer 'length'"):
        slogan_judge().check({**SLOGANS[0], "length": "six"}, "s.jsonl", 2)
    # a TRL `messages` row is read as its prompt and its final assistant turn
    user, assistant = {"role": "user", "content": "Pick a colour."}, {"role": "assistant", "content": "Blue."}
    from dpo3d.judges.reward import RewardModelJudge

    rm = RewardModelJudge(model=None, tokenizer=None)
    assert isinstance(rm, Judge) and isinstance(rules, Judge)
    assert rm.check({"messages": [user, assistant]}, "c.jsonl", 1) == {
        "messages": [user, assistant], "prompt": [user], "completion": [assistant]}
    with pytest.raises(RecordError, match=r"^c.jsonl:1: the conversation ends with a 'user' turn"):
        rm.check({"messages": [assistant, user]}, "c.jsonl", 1)


def test_size_hint_reads_ahead_only_what_it_must():
    records, size = size_hint(iter(range(5)), 5, 64)
    assert size == 5 and list(records) == [0, 1, 2, 3, 4]
    records, size = size_hint(iter(range(5)), None, 64)  # a short stream of unknown size: counted
    assert size == 5 and list(records) == [0, 1, 2, 3, 4]
    records, size = size_hint(iter(range(100)), None, 64)  # a long one: unknown, nothing lost
    assert size is None and list(records) == list(range(100))
    records, size = size_hint(iter(range(3)), None, 0)
    assert size is None and list(records) == [0, 1, 2]


def test_score_tally():
    tally = ScoreTally()
    for score in (0.5, None, 1.0, -2.0):
        tally.add(score)
    assert (tally.count, tally.mean, tally.low, tally.high, tally.full) == (3, pytest.approx(-0.5 / 3), -2.0, 1.0, 1)
    assert ScoreTally().mean is None


@pytest.mark.parametrize("shape, copies, total", [("parquet", 1, 4), ("jsonl", 1, 4), ("jsonl", 18, None)])
def test_the_progress_total_is_the_source_size_when_known(tmp_path, monkeypatch, shape, copies, total):
    from dpo3d_cli import common

    seen = {}
    real = common.progress

    def recording():
        bar = real()
        add_task = bar.add_task

        def add(description, total=None, **fields):
            seen["total"] = total
            return add_task(description, total=total, **fields)

        bar.add_task = add
        return bar

    monkeypatch.setattr(judge, "progress", recording)
    rows = MATH * copies
    if shape == "parquet":
        data = write_source(tmp_path, "cands", rows, "parquet")
    else:  # JSONL: a short file is read ahead and counted, a long one has no total (72 > the probe of 64)
        data = str(tmp_path / "cands.jsonl")
        (tmp_path / "cands.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run("judge", "math", data)
    assert result.exit_code == 0, result.output
    assert seen["total"] == total and len(result.stdout.splitlines()) == 4 * copies


def test_a_short_stream_is_checked_whole_before_anything_is_written():
    lines = json.dumps(POEMS[0]) + "\n" + json.dumps({**POEMS[1], "form": "sonnet"}) + "\n"
    result = runner.invoke(app, ["judge", "poem", "-"], input=lines.encode())
    assert result.exit_code == 2 and result.stdout == ""
    [message] = result.stderr.strip().splitlines()
    assert message.startswith("error: <stdin>:2: poem record: unknown form 'sonnet'; known: wujue")
