"""What a user reads on stderr: `--version`, user text printed as written, logs that read well in a
batch job (stderr a file), the live bar on a terminal, and build-pairs failing when it wrote nothing."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

import dpo3d
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.watch.probe_responses import ProbeResponseConfig
from dpo3d_cli import common
from dpo3d_cli.app import app
from dpo3d_cli.training_options import LiveDisplay

from .test_cli_train import ROOT, train_args
from .test_train_dpo import write_pairs

runner = CliRunner()


def test_version_prints_the_package_version_and_exits_0():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"dpo3d {dpo3d.__version__}\n"


def test_user_text_is_printed_as_written():
    # `:train:` is an emoji name and `[bold]` a markup tag to rich: neither may change what the user gave
    result = runner.invoke(app, ["build-pairs", "runs/gsm8k:train:[bold]x.jsonl"])
    assert result.exit_code == 2
    assert result.stderr == "error: runs/gsm8k:train:[bold]x.jsonl: no such file or folder\n"
    with common.console.capture() as captured:
        common.console.print("gsm8k:train: wrote 3 prompt records", highlight=False)
    assert captured.get() == "gsm8k:train: wrote 3 prompt records\n"


def test_build_pairs_that_writes_no_pairs_fails(tmp_path):
    tied = [{"id": "a", "prompt": "2+2?", "completion": f"answer {i}", "sample_index": i, "score": 1.0} for i in range(2)]
    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in tied))
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(app, ["build-pairs", str(judged), "-o", str(out)])
    assert result.exit_code == 1
    assert "no score gap" in result.stderr  # the table says why
    assert "error: no pairs written: none of the 1 groups read had both a chosen and a rejected candidate" in result.stderr
    assert not out.exists() and result.stdout == ""


def stage_time(name: str) -> str:
    return rf"^{re.escape(name)} took \d+\.\d s$"


def test_a_batch_job_log_has_whole_lines_one_per_logged_step_and_each_stage_time(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / ("a-run-folder-with-a-name-long-enough-to-pass-eighty-columns-" * 2)
    log = tmp_path / "job.log"
    with log.open("w") as stderr:  # a batch job: stderr is a file
        done = subprocess.run(
            [sys.executable, "-m", "dpo3d", *train_args(pairs, tiny_model_dir, out, "--max-steps", "2", "--log-every", "1",
                                                        "--probe-new-tokens", "4")],
            stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT, text=True,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    assert f"done: 2 steps → {out} (metrics.jsonl, summary.json)" in lines, text  # whole, on one line
    assert not [line for line in lines if line.endswith("…")], text
    assert "━" not in text  # no progress bar drawn into a file
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["0/2", "1/2", "2/2"], text
    for line in steps[1:]:
        assert re.search(r" loss=\d\.\d+", line) and " lr=0.005" in line, line
    for stage in ("probe responses", "reference log-probs", "step-0 measurements", "training (2 steps)",
                  "saving the final model"):
        assert [line for line in lines if re.match(stage_time(stage), line)], (stage, text)


def test_a_resumed_run_says_from_which_step(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"

    class Stop(Exception):
        pass

    def crash(step):
        if step == 2:
            raise Stop

    loop = LoopConfig(out=out, lr=5e-3, batch_size=2, grad_accum=1, max_steps=2, warmup_ratio=0.0, schedule="constant",
                      save_every=1, seed=0)
    with pytest.raises(Stop):
        train_dpo(DPORunConfig(model=str(tiny_model_dir), pairs=pairs, loop=loop,
                               probe_responses=ProbeResponseConfig(max_new_tokens=4)), LoopCallbacks(on_step=crash))
    result = runner.invoke(app, train_args(pairs, tiny_model_dir, out, "--max-steps", "2", "--save-every", "1",
                                           "--probe-new-tokens", "4", "--resume"))
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "resumed from step 1 of 2" in lines, result.stderr
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["2/2"]


def shown(terminal: bool) -> tuple[str, LiveDisplay]:
    console = Console(file=io.StringIO(), force_terminal=terminal, width=120, emoji=False)
    display = LiveDisplay(("loss",), console)
    callbacks = display.callbacks()
    with display.progress:
        callbacks.on_start(0, 3)
        callbacks.on_step(1)
        callbacks.on_log({"step": 1, "lr": 0.001, "loss": 0.5})
        callbacks.on_stage("training (3 steps)", 2.0)
    return console.file.getvalue(), display


def test_a_terminal_keeps_the_live_bar():
    text, display = shown(terminal=True)
    assert "━" in text and "loss=0.5" in text
    assert not re.search(r"^step 1/3", text, re.MULTILINE)  # the bar shows the step, no extra line
    assert "training (3 steps) took 2.0 s" in text


def test_a_file_gets_a_line_per_logged_step():
    text, _ = shown(terminal=False)
    assert text.splitlines() == ["step 1/3 loss=0.5 lr=0.001", "training (3 steps) took 2.0 s"]
