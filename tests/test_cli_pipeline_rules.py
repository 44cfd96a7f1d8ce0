"""The model-free pipeline through the command layer: datasets -> judge math -> build-pairs.

Checks the suite's rules on the way: stdout carries only JSONL, humans read stderr,
bad input is one line naming file:line with exit 2 and no output left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dpo3d.data.datasets import load_prompts
from dpo3d_cli.app import app

runner = CliRunner()


def run(*args: str, stdin: bytes | None = None):
    return runner.invoke(app, list(args), input=stdin)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # every stdout line must be JSON


def candidates(source: str = "policy") -> list[dict]:
    """Four candidates per real prompt: the reference (right), a wrong answer, no answer, a right
    answer in another form."""
    prompts = load_prompts("gsm8k:test", limit=3) + load_prompts("math500", where={"level": ["1"]}, limit=3)
    out = []
    for prompt in prompts:
        texts = [
            prompt["reference"],
            "Adding it all up, the answer is $\\boxed{1234567}$.",
            "I am not sure how to solve this.",
            f"Therefore the final answer is $\\boxed{{{prompt['answer']}}}$.",
        ]
        for index, text in enumerate(texts):
            out.append({**prompt, "completion": text, "sample_index": index, "source": source})
    return out


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_shell_pipe_judge_math_then_build_pairs(tmp_path):
    cands = write(tmp_path / "cands.jsonl", candidates())
    pairs_path = tmp_path / "pairs.jsonl"
    judge = subprocess.Popen(
        [sys.executable, "-m", "dpo3d", "judge", "math", str(cands)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    build = subprocess.run(
        [sys.executable, "-m", "dpo3d", "build-pairs", "-o", str(pairs_path)],
        stdin=judge.stdout, capture_output=True, text=True, timeout=300,
    )
    judge.stdout.close()
    judge_err = judge.stderr.read().decode()
    assert judge.wait(timeout=300) == 0, judge_err
    assert build.returncode == 0, build.stderr
    assert "judge math: 12/24 right" in judge_err
    assert build.stdout == ""  # the pairs went to the file
    assert "kept (pairs written)" in build.stderr and "6" in build.stderr
    pairs = jsonl(pairs_path.read_text())
    assert len(pairs) == 6
    for pair in pairs:
        assert pair["chosen"] == pair["reference"] and pair["chosen_sample_index"] == 0
        assert pair["rejected_sample_index"] == 1 and "1234567" in pair["rejected"]
        assert (pair["chosen_score"], pair["rejected_score"]) == (1.0, 0.0)
        assert [u["sample_index"] for u in pair["unseen"]] == [2, 3]
        assert set(pair) >= {"id", "prompt", "chosen", "rejected", "chosen_source", "rejected_source", "unseen"}


def test_judge_math_stdin_to_stdout():
    lines = "".join(json.dumps(r) + "\n" for r in candidates()[:4]).encode()
    result = run("judge", "math", stdin=lines)
    assert result.exit_code == 0, result.stderr
    records = jsonl(result.stdout)
    assert [r["score"] for r in records] == [1.0, 0.0, 0.0, 1.0]
    assert [r["verdict"]["status"] for r in records] == ["correct", "wrong", "no_answer", "correct"]
    assert "2/4 right" in result.stderr


def test_build_pairs_scenarios_from_several_files(tmp_path):
    judged = tmp_path / "policy.jsonl"
    assert run("judge", "math", str(write(tmp_path / "c.jsonl", candidates())), "-o", str(judged)).exit_code == 0
    weak = write(tmp_path / "weak.jsonl", [
        {**r, "source": "weak", "completion": "The answer is $\\boxed{0}$.", "score": 0.0}
        for r in jsonl(judged.read_text()) if r["sample_index"] == 0
    ])
    result = run("build-pairs", str(judged), str(weak), "--chosen-from", "reference", "--rejected-from", "weak")
    assert result.exit_code == 0, result.stderr
    pairs = jsonl(result.stdout)
    assert len(pairs) == 6 and all(p["chosen_source"] == "reference" and p["rejected_source"] == "weak" for p in pairs)
    assert all(len(p["unseen"]) == 4 for p in pairs)  # the policy's four samples are in neither side
    result = run("build-pairs", str(judged), "--rejected-from", "wek")
    assert result.exit_code == 2 and "no candidate has that source" in result.stderr and result.stdout == ""


def test_bad_input_names_file_and_line_and_leaves_nothing(tmp_path):
    records = candidates()[:3]
    del records[1]["answer"]
    bad = write(tmp_path / "bad.jsonl", records)
    out = tmp_path / "out" / "judged.jsonl"
    result = run("judge", "math", str(bad), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {bad}:2: missing field 'answer' (the gold final answer the math judge checks against)"]
    assert not out.exists() and not list(tmp_path.glob("out/*"))
    unjudged = write(tmp_path / "unjudged.jsonl", candidates()[:2])
    result = run("build-pairs", str(unjudged), "-o", str(out))
    assert result.exit_code == 2 and f"{unjudged}:1: missing field 'score'" in result.stderr
    assert not out.exists()
    result = run("judge", "math", stdin=b'{"completion": "x", "answer": "1"}\n{"completion": \n')
    assert result.exit_code == 2 and "<stdin>:2: malformed JSON" in result.stderr and result.stdout == ""
    result = run("build-pairs", str(tmp_path / "missing.jsonl"))
    assert result.exit_code == 2 and "missing.jsonl: no such file" in result.stderr


def test_datasets_command(tmp_path):
    result = run("datasets")
    assert result.exit_code == 0 and result.stdout == ""
    for name, size in (("math:train", "7498"), ("math500", "500"), ("gsm8k:test", "1319"), ("mawps", "2065")):
        assert name in result.stderr and size in result.stderr
    result = run("datasets", "math500", "--where", "level=5", "--shuffle", "--seed", "1", "--limit", "3")
    assert result.exit_code == 0, result.stderr
    records = jsonl(result.stdout)
    assert len(records) == 3 and all(r["meta"]["level"] == 5 for r in records)
    assert records == jsonl(run("datasets", "math500", "--where", "level=5", "--shuffle", "--seed", "1", "--limit", "3").stdout)
    custom = run("datasets", "svamp", "--limit", "1", "--template", "Q: {question}")
    assert jsonl(custom.stdout)[0]["prompt"][0]["content"].startswith("Q: There are 87 oranges")


@pytest.mark.parametrize(
    "args, message",
    [
        (("datasets", "math501"), "unknown dataset 'math501'"),
        (("datasets", "gsm8k:test", "--where", "level=5"), "cannot filter on level"),
        (("datasets", "math500", "--where", "level"), "KEY=VALUE"),
        (("datasets", "math500", "--template", "no placeholder"), "unknown template"),
        (("judge", "math", "--timeout", "0"), "--timeout"),
    ],
)
def test_usage_errors_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_help_lists_the_judges():
    result = run("judge", "--help")
    assert result.exit_code == 0 and "math" in result.output
    result = run("judge", "math", "--help")
    assert result.exit_code == 0 and "math-verify" in result.output
    result = run("build-pairs", "--help")
    assert result.exit_code == 0 and "--chosen-from" in result.output and "reference" in result.output


def test_judge_poem_and_slogan_score_with_the_rules_and_name_bad_lines(tmp_path):
    from dpo3d.poetry import score_poem, score_slogan

    poem = {"id": "p1", "prompt": "写一首五言绝句《静夜思》", "form": "wujue", "title": "静夜思", "language": "zh",
            "completion": "静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"}
    result = run("judge", "poem", "-", stdin=(json.dumps(poem, ensure_ascii=False) + "\n").encode())
    assert result.exit_code == 0, result.output
    [judged] = jsonl(result.stdout)
    expected = score_poem(poem, poem["completion"])
    assert judged["judge"] == "poem" and judged["verdict"] == expected and judged["score"] == expected["score"]
    assert judged["verdict"]["row_number"] == judged["verdict"]["title"] == 1.0

    slogan = {"id": "s1", "prompt": "Write a slogan for a bakery, 3-6 words.", "language": "en", "subject": "bakery",
              "keywords": [], "length": 6, "min_length": 3, "banned": ["best"], "completion": "Fresh bread at our bakery"}
    result = run("judge", "slogan", "-", stdin=(json.dumps(slogan) + "\n").encode())
    assert result.exit_code == 0, result.output
    [judged] = jsonl(result.stdout)
    assert judged["judge"] == "slogan" and judged["score"] == score_slogan(slogan, slogan["completion"])["score"] == 1.0

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**poem, "form": "sonnet"}, ensure_ascii=False) + "\n")
    out = tmp_path / "out.jsonl"
    result = run("judge", "poem", str(bad), "-o", str(out))
    assert result.exit_code == 2 and f"{bad}:1: poem record: unknown form 'sonnet'" in result.output
    assert not out.exists()
    assert run("judge", "slogan", "-", stdin=b"").exit_code == 2
