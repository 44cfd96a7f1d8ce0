"""Training commands as a user runs them: kill -9 and resume, 2-process accelerate, checkpoints loadable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpo3d.data.run_log import read_log

from .commands import dpo3d
from .launching import port_args
from .test_train_dpo import write_pairs

ROOT = Path(__file__).resolve().parents[1]


def train_args(pairs: Path, model: Path, out: Path, *extra: str) -> list[str]:
    # no squeezing probes: generating and scoring the tiny model's 128-token responses at every logged step
    # was most of each run's time (tests/test_probe_responses.py covers them, resume included)
    return ["train-dpo", "--pairs", str(pairs), "--model", str(model), "--out", str(out), "--lr", "5e-3",
            "--batch-size", "2", "--grad-accum", "1", "--schedule", "constant", "--warmup-ratio", "0",
            "--no-probe-greedy", "--probe-samples", "0", *extra]


def comparable(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in read_log(path)]


def test_kill_9_then_resume_ends_like_an_uninterrupted_run(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    steps = ["--max-steps", "16", "--save-every", "3"]
    whole = dpo3d(*train_args(pairs, tiny_model_dir, tmp_path / "whole", *steps))
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "dpo3d", *train_args(pairs, tiny_model_dir, out, *steps)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        logged = read_log(out / "metrics.jsonl")
        if logged and logged[-1]["step"] >= 7:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert read_log(out / "metrics.jsonl")[-1]["step"] < 16, "the run finished before it could be killed"
    assert (out / "checkpoint").is_dir()

    resumed = dpo3d(*train_args(pairs, tiny_model_dir, out, *steps, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(out / "metrics.jsonl") == comparable(tmp_path / "whole" / "metrics.jsonl")


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="accelerate CLI")
def test_two_process_accelerate_equals_one_process(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    single = dpo3d(*train_args(pairs, tiny_model_dir, tmp_path / "one", "--max-steps", "3", "--batch-size", "4", "--device", "cpu"))
    assert single.returncode == 0, single.stderr
    launcher = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    double = subprocess.run(
        # on CPUs accelerate needs --multi_gpu to start several processes; --device cpu makes them use gloo
        [launcher, "launch", *port_args(), "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "dpo3d",
         *train_args(pairs, tiny_model_dir, tmp_path / "two", "--max-steps", "3", "--batch-size", "2", "--device", "cpu")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = read_log(tmp_path / "one" / "metrics.jsonl"), read_log(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "two" / "run_config.json").read_text())["processes"] == 2
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "margin", "chosen_logp", "rejected_logp", "grad_norm", "probe_chosen_logp", "probe_rejected_logp"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key


def test_checkpoint_loads_in_logprobs(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    trained = dpo3d(*train_args(pairs, tiny_model_dir, tmp_path / "run", "--max-steps", "2", "--loss", "ipo", "--plot"))
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "curves.png").stat().st_size > 10_000
    scored = dpo3d("logprobs", str(pairs), "--model", str(tmp_path / "run"))
    assert scored.returncode == 0, scored.stderr
    assert len(scored.stdout.strip().splitlines()) == 8


def test_bad_pairs_file_is_one_line_exit_2(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "chosen": "a"}\n')
    result = dpo3d(*train_args(bad, tiny_model_dir, tmp_path / "run", "--max-steps", "1"))
    assert result.returncode == 2
    assert "bad.jsonl:1: missing field 'rejected'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_unknown_loss_lists_the_registry(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    result = dpo3d(*train_args(pairs, tiny_model_dir, tmp_path / "run", "--loss", "nope"))
    assert result.returncode == 2 and "unknown loss 'nope'" in result.stderr and "ipo" in result.stderr


def test_sft_then_dpo_from_its_checkpoint(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    sft = dpo3d("sft", "--data", str(pairs), "--model", str(tiny_model_dir), "--out", str(tmp_path / "sft"),
                "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3")
    assert sft.returncode == 0, sft.stderr
    assert read_log(tmp_path / "sft" / "metrics.jsonl")[-1]["step"] == 2
    dpo = dpo3d(*train_args(pairs, tmp_path / "sft", tmp_path / "dpo", "--max-steps", "1"))
    assert dpo.returncode == 0, dpo.stderr
