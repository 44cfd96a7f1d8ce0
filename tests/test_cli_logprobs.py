"""`dpo3d logprobs` end to end through the command layer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpo3d_cli.app import app

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples" / "pairs.jsonl"
runner = CliRunner()


def run(*args: str, stdin: bytes | None = None):
    return runner.invoke(app, list(args), input=stdin)


def test_help_teaches():
    result = run("--help")
    assert result.exit_code == 0 and "logprobs" in result.output
    result = run("logprobs", "--help")
    assert result.exit_code == 0 and "Table 1" in result.output and "--model" in result.output


def test_scores_pairs_to_a_file(tmp_path, tiny_model_dir):
    out = tmp_path / "scored.jsonl"
    result = run("logprobs", str(EXAMPLES), "--model", str(tiny_model_dir), "-o", str(out), "-b", "4")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    source = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    assert len(rows) == len(source)
    for row, original in zip(rows, source, strict=True):
        assert row["id"] == original["id"] and row["chosen_source"] == original["chosen_source"]  # passthrough
        for side in ("chosen", "rejected"):
            assert math.isfinite(row[f"{side}_logp"]) and row[f"{side}_logp"] < 0
            assert row[f"{side}_logp_mean"] == pytest.approx(row[f"{side}_logp"] / row[f"{side}_tokens"], rel=1e-5)
    assert "mean per-token log-prob" in result.output


def test_reads_stdin_and_writes_stdout(tiny_model_dir):
    line = json.dumps({"id": "a", "prompt": "Say hi.", "completion": "hi"}) + "\n"
    result = run("logprobs", "-", "--model", str(tiny_model_dir), stdin=line.encode())
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[0])
    assert record["id"] == "a" and record["completion_tokens"] >= 1


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"prompt": "x", "chosen": "a", "rejected": "b"}\n{"prompt": "x", "chosen": \n', ":2: malformed JSON"),
        (b'{"prompt": "x", "chosen": "a"}\n', ":1: missing field 'rejected' (a pair needs chosen and rejected)"),
        (b'{"prompt": "x", "chosen": 3, "rejected": "b"}\n', ":1: field 'chosen' should be a string"),
        (b"", "empty input"),
        (b'{"prompt": "caf\xe9", "completion": "b"}\n', ":1: not valid UTF-8"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, tiny_model_dir, content, problem):
    data = tmp_path / "in.jsonl"
    data.write_bytes(content)
    out = tmp_path / "out.jsonl"
    result = run("logprobs", str(data), "--model", str(tiny_model_dir), "-o", str(out))
    assert result.exit_code == 2
    message = result.output.strip()
    assert problem in message and str(data) in message
    assert "Traceback" not in message
    assert not out.exists() and list(tmp_path.glob(".out.jsonl*")) == []


def test_unknown_model_folder_is_a_clear_error(tmp_path):
    result = run("logprobs", str(EXAMPLES), "--model", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "no such model folder" in result.output


@pytest.mark.slow
def test_real_model_gives_finite_logprobs_on_examples(tmp_path):
    out = tmp_path / "scored.jsonl"
    result = run("logprobs", str(EXAMPLES), "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(math.isfinite(r["chosen_logp"]) and math.isfinite(r["rejected_logp"]) for r in rows)
    # the real instruct model finds the dataset's own solutions likelier per token than wrong shortcuts
    chosen = sum(r["chosen_logp_mean"] for r in rows) / len(rows)
    rejected = sum(r["rejected_logp_mean"] for r in rows) / len(rows)
    assert -5 < rejected < chosen < 0


def test_ref_gives_implicit_rewards_and_their_accuracy(tmp_path, tiny_model_dir, tokenizer):
    from dpo3d.models.loading import save_pretrained
    from dpo3d.models.tiny import tiny_causal_lm

    other = tmp_path / "other"
    save_pretrained(tiny_causal_lm(tokenizer, seed=1), tokenizer, other)
    out = tmp_path / "scored.jsonl"
    result = run("logprobs", str(EXAMPLES), "--model", str(tiny_model_dir), "--ref", str(other), "--beta", "0.5",
                 "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    base = tmp_path / "base.jsonl"
    assert run("logprobs", str(EXAMPLES), "--model", str(other), "-o", str(base)).exit_code == 0
    for row, ref in zip(rows, (json.loads(line) for line in base.read_text().splitlines()), strict=True):
        assert row["chosen_reward"] == pytest.approx(0.5 * (row["chosen_logp"] - ref["chosen_logp"]), rel=1e-5, abs=1e-6)
        assert row["implicit_margin"] == pytest.approx(row["chosen_reward"] - row["rejected_reward"], abs=1e-6)
    right = sum(row["implicit_margin"] > 0 for row in rows)
    assert f"implicit-reward accuracy vs other (β = 0.5): {right}/{len(rows)}" in result.output
