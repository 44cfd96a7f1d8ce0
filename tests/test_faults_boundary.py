"""Faults at the command layer's one error boundary (cli/common.user_errors, applied to every command in
app.py): output locations checked before any work, OS errors (read-only, a folder for a file, a full disk)
as one line naming the path with exit 2 and nothing half-written, an internal bug as one line with exit 1
(the traceback with --debug), an interrupt as one line with exit 130, and a killed writer's temp files
removed by the next run on the same output.

We run as root in some places, where a chmod'ed folder stays writable: read-only locations are injected
at the file-system call instead (the errno the kernel gives for a read-only mount)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from dpo3d.data import records
from dpo3d_cli.app import app

runner = CliRunner()

CANDIDATES = [
    {"prompt": "1+1?", "completion": "The answer is $\\boxed{2}$.", "answer": "2"},
    {"prompt": "1+1?", "completion": "The answer is $\\boxed{3}$.", "answer": "2"},
]


def run(*args: str):
    return runner.invoke(app, list(args))


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def one_line(result, code: int, *parts: str) -> str:
    """The failure is ``code``, one ``error:`` line holding every part, and no traceback."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for part in parts:
        assert part in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- output locations, before any work


def test_an_output_file_that_is_a_folder_is_refused_before_reading_input(tmp_path):
    folder = tmp_path / "judged"
    folder.mkdir()
    # the input does not exist: the output is checked first, so the line is about the output
    one_line(run("judge", "math", str(tmp_path / "missing.jsonl"), "-o", str(folder)), 2, str(folder), "is a folder")


def test_an_output_whose_parent_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    data = write(tmp_path / "c.jsonl", CANDIDATES)
    one_line(run("judge", "math", data, "-o", str(blocker / "judged.jsonl")), 2, str(blocker), "is a file, not a folder")


def test_a_run_folder_that_is_a_file_is_refused_before_loading_a_model(tmp_path):
    taken = tmp_path / "run"
    taken.write_text("not a folder")
    pairs = write(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    # a model that does not exist: the run folder is checked before anything is loaded
    result = run("train-dpo", "--model", str(tmp_path / "no-model"), "--pairs", pairs, "--out", str(taken))
    one_line(result, 2, str(taken), "is a file")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_an_unwritable_output_folder_is_refused_naming_it(tmp_path, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), kwargs.get("dir"))

    monkeypatch.setattr("dpo3d.data.faults.tempfile.TemporaryFile", refuse)
    data = write(tmp_path / "c.jsonl", CANDIDATES)
    line = one_line(run("judge", "math", data, "-o", str(tmp_path / "judged.jsonl")), 2, str(tmp_path))
    assert ("read-only" if code == errno.EROFS else "permission denied") in line


def test_eval_math_refuses_an_unwritable_summary_before_it_generates(tmp_path, monkeypatch):
    def no_generation(*args, **kwargs):
        raise AssertionError("the output was not checked before generating")

    monkeypatch.setattr("dpo3d_cli.evaluating.open_sampler", no_generation)
    folder = tmp_path / "summary.json"
    folder.mkdir()
    result = run("eval-math", "--data", "asdiv", "--limit", "1", "--summary", str(folder))
    one_line(result, 2, "--summary", str(folder), "is a folder")


# --------------------------------------------------------------------------- OS errors mid-run, nothing half-written


def test_a_full_disk_while_writing_is_one_line_and_the_previous_output_stays_whole(tmp_path, monkeypatch):
    data = write(tmp_path / "c.jsonl", CANDIDATES)
    out = tmp_path / "judged.jsonl"
    assert run("judge", "math", data, "-o", str(out)).exit_code == 0
    before = out.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(records.os, "fsync", full)
    one_line(run("judge", "math", data, "-o", str(out)), 2, str(out), "no space left")
    assert out.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_a_folder_where_a_written_file_belongs_mid_run_is_one_line(tmp_path, monkeypatch):
    # the target turns into a folder after the check (another process): the rename fails, nothing is lost
    data = write(tmp_path / "c.jsonl", CANDIDATES)
    out = tmp_path / "judged.jsonl"
    real_publish = records._publish

    def raced(tmp_name, target):
        target.mkdir()
        (target / "keep").write_text("someone else's")
        real_publish(tmp_name, target)

    monkeypatch.setattr(records, "_publish", raced)
    one_line(run("judge", "math", data, "-o", str(out)), 2, str(out))
    assert (out / "keep").read_text() == "someone else's"
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- bugs and interrupts


def test_an_internal_error_is_one_line_exit_1_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nsecond line")

    monkeypatch.setattr("dpo3d_cli.judge.run_judge", broken)
    data = write(tmp_path / "c.jsonl", CANDIDATES)
    monkeypatch.delenv("DPO3D_DEBUG", raising=False)
    line = one_line(run("judge", "math", data), 1, "internal error", "RuntimeError: a bug", "--debug")
    assert "second line" not in line
    monkeypatch.setenv("DPO3D_DEBUG", "0")  # restored after the test: --debug sets it for this process
    shown = run("--debug", "judge", "math", data)
    assert shown.exit_code == 1 and isinstance(shown.exception, RuntimeError)  # re-raised: the traceback


def test_an_interrupt_is_one_line_exit_130(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dpo3d_cli.judge.run_judge", interrupted)
    one_line(run("judge", "math", write(tmp_path / "c.jsonl", CANDIDATES)), 130, "interrupted")


def test_sigterm_mid_write_leaves_no_temp_file_and_says_so(tmp_path):
    """A real process: `judge math` on 2,000 candidates (seconds of judging); SIGTERM once its output is a
    temp file ends it like Ctrl-C: exit 130, one line, the temp file gone, no output published."""
    many = [{**CANDIDATES[1], "completion": f"The answer is $\\boxed{{{i}}}$."} for i in range(2000)]
    out = tmp_path / "judged.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "dpo3d", "judge", "math", "--workers", "0",
                             write(tmp_path / "c.jsonl", many), "-o", str(out)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert leftovers(tmp_path), "the writer never opened its temp file"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    assert leftovers(tmp_path) == [] and not out.exists()


# --------------------------------------------------------------------------- debris of a killed writer


def test_the_next_run_removes_a_dead_writers_temp_file_and_keeps_a_live_ones(tmp_path):
    out = tmp_path / "judged.jsonl"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    stale = tmp_path / f".{out.name}.{dead_pid}.abc123.tmp"
    unnamed = tmp_path / f".{out.name}.oldstyle.tmp"  # an earlier version's name (no pid): its writer is gone
    live = tmp_path / f".{out.name}.{os.getppid()}.def456.tmp"  # a running process may still write it
    for leftover in (stale, unnamed, live):
        leftover.write_text("half a line")
    assert run("judge", "math", write(tmp_path / "c.jsonl", CANDIDATES), "-o", str(out)).exit_code == 0
    assert leftovers(tmp_path) == [live.name]
    assert len(out.read_text().splitlines()) == len(CANDIDATES)


def test_temp_files_carry_the_writers_pid(tmp_path):
    target = tmp_path / "x.json"
    with records.temp_beside(target) as (handle, name):
        os.close(handle)
        assert os.path.basename(name).startswith(f".x.json.{os.getpid()}.")
    assert target.exists() and not leftovers(tmp_path)
