"""`dpo3d sample` end to end through the command layer, on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from typer.testing import CliRunner

from dpo3d_cli.app import app

runner = CliRunner()

PROMPTS = [
    {"id": "q1", "question": "What is 2 + 3?", "answer": "5"},
    {"id": "q2", "prompt": [{"role": "user", "content": "Name a prime number."}], "answer": "2"},
    {"id": "q3", "prompt": "Plain text prompt:", "answer": "7", "meta": {"level": 3}},
]


def run(*args: str, stdin: bytes | None = None):
    return runner.invoke(app, ["sample", *args], input=stdin)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # every stdout line must be JSON


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def sample_args(prompts_file, model_dir, *extra: str) -> list[str]:
    return ["--prompts", str(prompts_file), "--model", str(model_dir), "-n", "2", "--max-new-tokens", "5",
            "-b", "2", *extra]


def test_help_teaches():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "sample" in result.output
    result = run("--help")
    assert result.exit_code == 0
    for flag in ("--prompts", "-n", "--temperature", "--top-p", "--max-new-tokens", "--batch-size", "--seed",
                 "--resume", "--backend", "--template", "--limit", "--source", "--columns", "--subset"):
        # the whole flag, not a piece of a longer one ("-n" is inside "--max-new-tokens")
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.output), flag


def test_writes_one_candidate_record_per_sample_to_stdout(prompts_file, tiny_model_dir):
    result = run(*sample_args(prompts_file, tiny_model_dir))
    assert result.exit_code == 0, result.output
    records = jsonl(result.stdout)
    assert [(r["id"], r["sample_index"]) for r in records] == [(p["id"], k) for p in PROMPTS for k in range(2)]
    for record in records:
        assert record["source"] == "tiny"  # the model folder's name
        assert isinstance(record["completion"], str) and record["finish_reason"] in ("stop", "length")
        assert record["answer"] == next(p["answer"] for p in PROMPTS if p["id"] == record["id"])
    # a question is put into the boxed-answer instruction as a chat message; ready prompts stay as they are
    assert "\\boxed{}" in records[0]["prompt"][0]["content"] and "What is 2 + 3?" in records[0]["prompt"][0]["content"]
    assert records[2]["prompt"] == PROMPTS[1]["prompt"] and records[4]["prompt"] == "Plain text prompt:"
    assert "3 prompts × 2" in result.stderr and "tok/s" in result.stderr


def test_seed_decides_the_candidates(prompts_file, tiny_model_dir):
    first = run(*sample_args(prompts_file, tiny_model_dir, "--seed", "1", "--source", "policy"))
    again = run(*sample_args(prompts_file, tiny_model_dir, "--seed", "1", "--source", "policy"))
    other = run(*sample_args(prompts_file, tiny_model_dir, "--seed", "2", "--source", "policy"))
    assert first.exit_code == again.exit_code == other.exit_code == 0
    assert first.stdout == again.stdout
    assert [r["completion"] for r in jsonl(first.stdout)] != [r["completion"] for r in jsonl(other.stdout)]
    assert {r["source"] for r in jsonl(first.stdout)} == {"policy"}


def test_greedy_with_one_candidate(prompts_file, tiny_model_dir):
    args = ["--prompts", str(prompts_file), "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--temperature", "0"]
    result = run(*args, "-n", "1")
    assert result.exit_code == 0, result.output
    assert [r["sample_index"] for r in jsonl(result.stdout)] == [0, 0, 0]
    refused = run(*args, "-n", "2")
    assert refused.exit_code == 2 and "use -n 1" in refused.output


def test_interrupted_file_run_resumes_to_the_uninterrupted_file(tmp_path, prompts_file, tiny_model_dir):
    full = tmp_path / "full.jsonl"
    result = run(*sample_args(prompts_file, tiny_model_dir, "--out", str(full)))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the candidates went to the file
    text = full.read_text()
    # a crash in the middle of the second chunk's fourth line
    cut = text.index("\n", text.index("\n", text.index("\n") + 1) + 1) + 30
    run_file = tmp_path / "run.jsonl"
    run_file.write_text(text[:cut])
    (tmp_path / "run.jsonl.run.json").write_text((tmp_path / "full.jsonl.run.json").read_text())

    refused = run(*sample_args(prompts_file, tiny_model_dir, "--out", str(run_file)))
    assert refused.exit_code == 2 and "pass --resume" in refused.output
    assert run_file.read_text() == text[:cut]

    resumed = run(*sample_args(prompts_file, tiny_model_dir, "--out", str(run_file), "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "1 already in" in resumed.stderr  # the first chunk (one prompt) was kept
    assert run_file.read_text() == text

    other_seed = run(*sample_args(prompts_file, tiny_model_dir, "--out", str(run_file), "--resume", "--seed", "5"))
    assert other_seed.exit_code == 2 and "seed 0 -> 5" in other_seed.output


def test_builtin_prompts_with_limit_and_shuffle(tiny_model_dir):
    args = ["--prompts", "gsm8k:test", "--limit", "2", "--model", str(tiny_model_dir), "-n", "1", "--max-new-tokens", "3"]
    plain = run(*args)
    assert plain.exit_code == 0, plain.output
    assert [r["id"] for r in jsonl(plain.stdout)] == ["gsm8k-test-0", "gsm8k-test-1"]
    assert all(r["answer"] and r["reference"] for r in jsonl(plain.stdout))
    shuffled = run(*args, "--shuffle", "--seed", "4")
    assert shuffled.exit_code == 0 and [r["id"] for r in jsonl(shuffled.stdout)] != ["gsm8k-test-0", "gsm8k-test-1"]


def test_output_feeds_judge_math(prompts_file, tiny_model_dir):
    sampled = run(*sample_args(prompts_file, tiny_model_dir))
    assert sampled.exit_code == 0, sampled.output
    judged = runner.invoke(app, ["judge", "math", "--workers", "0"], input=sampled.stdout)
    assert judged.exit_code == 0, judged.output
    records = jsonl(judged.stdout)
    assert len(records) == 6 and all(r["score"] in (0, 1) for r in records)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": \n', ":2: malformed JSON"),
        (b'{"id": "a", "text": "x"}\n', ":1: record needs a 'prompt'"),
        (b'{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', ":2: duplicate id 'a'"),
        (b"", "empty input"),
    ],
)
def test_bad_prompts_are_one_line_exit_2_and_no_output(tmp_path, tiny_model_dir, content, problem):
    data = tmp_path / "in.jsonl"
    data.write_bytes(content)
    out = tmp_path / "out.jsonl"
    result = run("--prompts", str(data), "--model", str(tiny_model_dir), "-o", str(out))
    assert result.exit_code == 2
    message = result.output.strip()
    assert problem in message and str(data) in message and len(message.splitlines()) == 1
    assert "Traceback" not in message
    assert not out.exists() and not (tmp_path / "out.jsonl.run.json").exists()


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--prompts", "gsm8k:tset"], "unknown dataset 'gsm8k:tset'"),
        (["--prompts", "gsm8k:test", "--resume"], "--resume needs --out FILE"),
        (["--prompts", "gsm8k:test", "--limit", "0"], "no prompts left"),
        (["--prompts", "gsm8k:test", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--prompts", "gsm8k:test", "--backend", "tgi"], "--backend must be one of hf, vllm"),
    ],
)
def test_bad_flags_are_one_line_exit_2(tiny_model_dir, args, problem):
    result = run(*args, "--model", str(tiny_model_dir))
    assert result.exit_code == 2 and problem in result.output and "Traceback" not in result.output


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_is_a_clear_error(prompts_file, tiny_model_dir):
    result = run(*sample_args(prompts_file, tiny_model_dir, "--backend", "vllm"))
    assert result.exit_code == 2 and "--backend vllm needs vLLM installed" in result.output


@pytest.mark.slow
def test_real_model_samples_gsm8k(tmp_path):
    out = tmp_path / "samples.jsonl"
    result = run("--prompts", "gsm8k:test", "--limit", "2", "-n", "2", "--max-new-tokens", "24", "-o", str(out))
    assert result.exit_code == 0, result.output
    records = jsonl(out.read_text())
    assert [(r["id"], r["sample_index"]) for r in records] == [
        ("gsm8k-test-0", 0), ("gsm8k-test-0", 1), ("gsm8k-test-1", 0), ("gsm8k-test-1", 1)
    ]
    assert {r["source"] for r in records} == {"smollm2-135m-instruct"}
    # the real instruct model answers in words, not the random soup of a tiny model
    for record in records:
        words = record["completion"].split()
        assert len(words) >= 8 and sum(w.isalpha() for w in words) >= len(words) // 2
    assert records[0]["completion"] != records[1]["completion"]
