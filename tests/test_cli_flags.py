"""Flags that now mean the same in every command: --limit on the readers of pairs, a trainer's --device,
sft --plot, judge math's float --timeout (the vocabulary itself: tests/test_flag_vocabulary.py)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dpo3d_cli.app import app

from .test_train_dpo import write_pairs

runner = CliRunner()
QUICK = ["--max-steps", "1", "--batch-size", "2", "--grad-accum", "1", "--device", "cpu"]


def run(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def test_logprobs_limit_scores_only_the_first_n(tmp_path, tiny_model_dir):
    pairs, out = write_pairs(tmp_path / "pairs.jsonl", n=10), tmp_path / "scored.jsonl"
    result = run("logprobs", pairs, "--model", tiny_model_dir, "--limit", "3", "-o", out)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["p0", "p1", "p2"]


@pytest.mark.parametrize("command", ["train-dpo", "train-rm"])
def test_a_trainers_limit_reads_only_the_first_n_pairs(tmp_path, tiny_model_dir, command):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=10)
    # a broken record after the limit is never read
    with pairs.open("a") as handle:
        handle.write("{not json\n")
    extra = ["--no-probe-greedy", "--probe-samples", "0", "--probe-size", "2"] if command == "train-dpo" else []
    result = run(command, "--pairs", pairs, "--limit", "3", "--model", tiny_model_dir, "--out", tmp_path / "run",
                 *QUICK, *extra)
    assert result.exit_code == 0, result.output
    extra_config = json.loads((tmp_path / "run" / "run_config.json").read_text())["extra"]
    assert (extra_config["limit"], extra_config["pairs_read"]) == (3, 3)


def test_without_a_limit_the_whole_file_is_read(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=10)
    with pairs.open("a") as handle:
        handle.write("{not json\n")
    result = run("train-rm", "--pairs", pairs, "--model", tiny_model_dir, "--out", tmp_path / "run", *QUICK)
    assert result.exit_code == 2 and "pairs.jsonl:11: malformed JSON" in result.stderr


@pytest.mark.parametrize("device, message", [
    ("tpu9", "a trainer takes auto, cpu, cuda or cuda:N"),
    ("cuda:0" if not torch.cuda.is_available() else "mps", "no CUDA GPU is visible" if not torch.cuda.is_available()
     else "a trainer takes auto, cpu, cuda or cuda:N"),
])
def test_a_trainers_device_takes_samples_values_and_says_what_is_wrong(tmp_path, device, message):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=4)
    result = run("train-rm", "--pairs", pairs, "--out", tmp_path / "run", "--device", device)
    assert result.exit_code == 2 and message in result.stderr, result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_trainer_runs_on_cuda_0(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=4)
    result = run("train-rm", "--pairs", pairs, "--model", tiny_model_dir, "--out", tmp_path / "run",
                 *[arg if arg != "cpu" else "cuda:0" for arg in QUICK])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["cpu"] is False


def test_sft_plot_draws_the_curves(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=4)
    result = run("sft", "--data", pairs, "--model", tiny_model_dir, "--out", tmp_path / "run", *QUICK, "--plot")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_judge_math_timeout_takes_a_fraction(tmp_path):
    candidates = tmp_path / "c.jsonl"
    candidates.write_text(json.dumps({"id": "a", "completion": "so \\boxed{1/2}", "answer": "0.5"}) + "\n")
    result = run("judge", "math", candidates, "--timeout", "1.5", "-j", "0", "-o", tmp_path / "judged.jsonl")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "judged.jsonl").read_text())["correct"] is True


def test_a_config_file_gives_any_command_its_options(tmp_path):
    config = tmp_path / "prompts.toml"
    config.write_text('limit = 2\nshuffle = true\nseed = 1\n')
    out = tmp_path / "prompts.jsonl"
    result = run("datasets", "math500", "--config", config, "-o", out)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2


def test_sft_limit_reads_only_the_first_n(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=6)
    with pairs.open("a") as handle:
        handle.write("{not json\n")
    result = run("sft", "--data", pairs, "--limit", "4", "--model", tiny_model_dir, "--out", tmp_path / "run", *QUICK)
    assert result.exit_code == 0, result.output
