"""`eval-math` on the real bundled SmolLM2 model (slow: a few minutes on a CPU)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dpo3d_cli.app import app


@pytest.mark.slow
def test_real_model_eval_math_gsm8k(tmp_path):
    summary, out = tmp_path / "summary.json", tmp_path / "judged.jsonl"
    result = CliRunner().invoke(app, [
        "eval-math", "--data", "gsm8k:test", "--limit", "2", "--max-new-tokens", "64",
        "--summary", str(summary), "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads(summary.read_text())
    model = saved["models"]["smollm2-135m-instruct"]
    assert model["problems"] == model["completions"] == 2
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"gsm8k-test-{i}" for i in range(2)]
    # the summary counts exactly the per-problem verdicts
    right = sum(record["verdict"]["status"] == "correct" for record in records)
    assert model["correct"] == right and model["accuracy"] == pytest.approx(right / 2)
    # the real instruct model writes words, and each answer was judged
    for record in records:
        assert len(record["completion"].split()) >= 8 and record["verdict"]["status"] in (
            "correct", "wrong", "no_answer", "timeout")
    assert "accuracy" in result.stderr
