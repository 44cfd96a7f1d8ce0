"""Faults around a run folder: a lock per folder, no debris after a crash, a word on Ctrl-C/SIGTERM, a resumed
run whose metrics.jsonl no longer matches its checkpoint, a final save that fails, and the math judge's pool
workers after their parent is killed.

Classes (the issue's fault-injection table): lock, debris, signal, metrics, final-save, pool. Each case is a
test named after what it tries; in-process runs use the shared loop on a tiny random model with a task that
trains in milliseconds, and only what must be a real process is one (a SIGTERM, a kill -9).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dpo3d.data.faults import Fault
from dpo3d.data.run_log import read_log
from dpo3d.training.config import LoopConfig
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.training.task import Task

from .test_train_dpo import write_pairs

ROOT = Path(__file__).resolve().parents[1]


class Regress(Task):
    """Next-token cross-entropy on fixed token ids: a task a tiny model trains on in milliseconds."""

    def __init__(self, n: int = 8, length: int = 6):
        self.ids = torch.arange(n * length).reshape(n, length) % 50 + 10

    def lengths(self) -> list[int]:
        return [self.ids.shape[1]] * len(self.ids)

    def loss(self, model, indices):
        batch = self.ids[indices].to(model.device)
        loss = model(input_ids=batch, labels=batch).loss
        return loss, {"loss": loss.detach().reshape(1).expand(len(indices))}


def loop_run(out: Path, tokenizer, steps: int = 4, save_every: int = 0, resume: bool = False,
             callbacks: LoopCallbacks | None = None, model=None):
    from dpo3d.models.tiny import tiny_causal_lm
    from dpo3d.training.loop import train

    config = LoopConfig(out=out, lr=1e-3, batch_size=2, grad_accum=1, max_steps=steps, warmup_ratio=0.0,
                        schedule="constant", save_every=save_every, resume=resume, cpu=True)
    return train(model or tiny_causal_lm(tokenizer, seed=0), tokenizer, Regress(), config, callbacks)


def stop_at(when: str, step: int, text: str = "") -> LoopCallbacks:
    """Callbacks that raise KeyboardInterrupt (what Ctrl-C and the CLI's SIGTERM raise) at ``step``:
    ``when`` is ``step`` (after the update, before its log) or ``log`` (after its record is written)."""

    def on_step(done: int) -> None:
        if when == "step" and done == step:
            raise KeyboardInterrupt(text)

    def on_log(record: dict) -> None:
        if when == "log" and record.get("step") == step:
            raise KeyboardInterrupt(text)

    return LoopCallbacks(on_step=on_step, on_log=on_log)


def steps_of(folder: Path) -> list[int]:
    return [record["step"] for record in read_log(folder / "metrics.jsonl")]


def saved_step(folder: Path) -> int:
    return int(torch.load(folder / "checkpoint" / "trainer_state.pt", weights_only=True)["step"])


def debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".checkpoint", ".final", ".dpo3d")))


@pytest.fixture(scope="module")
def cut(tmp_path_factory, tokenizer):
    """A run of 6 steps (a checkpoint every 2) interrupted right after logging step 5: its checkpoint is
    step 4, its metrics.jsonl holds steps 0-5. Returns the folder (copy it: tests change it) and the
    interrupt's text."""
    folder = tmp_path_factory.mktemp("cut") / "run"
    with pytest.raises(KeyboardInterrupt) as interrupted:
        loop_run(folder, tokenizer, steps=6, save_every=2, callbacks=stop_at("log", 5))
    assert saved_step(folder) == 4 and steps_of(folder) == [0, 1, 2, 3, 4, 5]
    return folder, str(interrupted.value)


def copy_of(cut, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(cut[0], folder)
    return folder


def started_at(record: list[int]) -> LoopCallbacks:
    return LoopCallbacks(on_start=lambda start, total: record.append(start))


# --------------------------------------------------------------------------- lock


def _python(*code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / '.shim'}{os.pathsep}{ROOT}"}
    return subprocess.Popen([sys.executable, *code], cwd=ROOT, env=env, **kwargs)


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def held_train_dpo(tmp_path_factory, tiny_model_dir):
    """A real `dpo3d train-dpo` (checkpoints every 2 steps), running: the lock's holder and SIGTERM's target.
    Yields (process, out); the tests below use it in order, the SIGTERM last."""
    tmp = tmp_path_factory.mktemp("held")
    pairs = write_pairs(tmp / "pairs.jsonl")
    out = tmp / "run"
    stderr = open(tmp / "stderr.txt", "w+")  # a file, not a pipe: a pipe nobody reads would block the run
    process = _python("-m", "dpo3d", "train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--out",
                      str(out), "--lr", "5e-3", "--batch-size", "2", "--grad-accum", "1", "--schedule", "constant",
                      "--warmup-ratio", "0", "--no-probe-greedy", "--probe-samples", "0", "--max-steps", "100000",
                      "--save-every", "2", stdout=subprocess.DEVNULL, stderr=stderr)
    process.stderr_file = stderr
    try:
        _wait_for(lambda: (out / "checkpoint").is_dir() or process.poll() is not None, 120, "the first checkpoint")
        assert process.poll() is None, (tmp / "stderr.txt").read_text()[-3000:]
        yield process, out
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        stderr.close()


def test_lock_a_second_run_on_a_held_folder_is_refused_naming_the_holder(held_train_dpo, tokenizer):
    process, out = held_train_dpo
    before = steps_of(out)
    for resume in (False, True):
        with pytest.raises(Fault) as refused:
            loop_run(out, tokenizer, steps=2, resume=resume)
        text = str(refused.value)
        assert f"pid {process.pid}" in text and str(out) in text and "\n" not in text
    assert process.poll() is None, "the holder must run on"
    logged = steps_of(out)
    assert logged[: len(before)] == before and logged == sorted(set(logged)), "the refused runs wrote no metrics"


def test_signal_sigterm_says_the_last_saved_step_and_how_to_resume(held_train_dpo):
    process, out = held_train_dpo
    _wait_for(lambda: max(steps_of(out), default=0) >= 3, 60, "step 3")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    process.stderr_file.seek(0)
    stderr = process.stderr_file.read()
    assert process.returncode == 130, stderr[-2000:]
    step = saved_step(out)
    lines = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1, stderr[-2000:]
    assert f"step {step}" in lines[0] and "--resume" in lines[0] and str(out / "checkpoint") in lines[0]
    assert debris(out) == [], "the lock is released and nothing half-written is left"


def test_lock_left_by_a_killed_process_is_taken_over(tmp_path, tokenizer):
    from dpo3d.data.run_lock import FolderInUse, RunLock

    out = tmp_path / "run"
    holder = _python("-c", "import sys, time; from dpo3d.data.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); "
                     "print('held', flush=True); time.sleep(120)", str(out), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".dpo3d") for p in out.iterdir()), "the killed holder left its lock file"
    result = loop_run(out, tokenizer, steps=2)
    assert result.steps == 2 and steps_of(out) == [0, 1, 2]
    assert debris(out) == [], "a finished run leaves no lock file"


def test_lock_is_released_when_a_run_fails_and_taken_only_by_the_main_process(tmp_path, tokenizer):
    from types import SimpleNamespace

    from dpo3d.training.run_folder import TrainingRun

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        loop_run(out, tokenizer, steps=3, callbacks=stop_at("step", 1))
    assert debris(out) == []
    with TrainingRun(out, SimpleNamespace(is_main_process=True, num_processes=1), [], LoopCallbacks()):
        rank_1 = SimpleNamespace(is_main_process=False, num_processes=1)
        with TrainingRun(out, rank_1, [], LoopCallbacks()):  # another rank of the same launch: not refused
            pass
        assert len(debris(out)) == 1
    assert debris(out) == []


def test_lock_a_held_folder_is_refused_early_by_a_probe_that_takes_nothing(tmp_path):
    from dpo3d.data.run_lock import FolderInUse, RunLock, check_free

    check_free(tmp_path / "none")  # no folder, no lock
    with RunLock(tmp_path / "run"):
        with pytest.raises(FolderInUse, match=f"pid {os.getpid()}"):
            check_free(tmp_path / "run")
    check_free(tmp_path / "run")
    assert not (tmp_path / "run").exists(), "a lock that made its folder removes it when nothing was written"


def test_lock_a_study_folder_in_use_is_refused_naming_the_holder(tmp_path, tiny_model_dir):
    from dpo3d.data.run_lock import RunLock
    from dpo3d.study.run import run_study

    from .test_study import tiny_config

    config = tiny_config(tmp_path, tiny_model_dir, "study")
    with RunLock(config.out).acquire(), pytest.raises(Fault, match=f"pid {os.getpid()}"):
        run_study(config)
    assert not (Path(config.out) / "study_config.json").exists()


def test_lock_an_iterate_folder_in_use_is_refused_naming_the_holder(tmp_path, tiny_model_dir):
    from dpo3d.data.run_lock import RunLock
    from dpo3d.iterate.rounds import run_iterate

    from .test_iterate import make_config

    config = make_config(tmp_path, tiny_model_dir)
    with RunLock(config.out).acquire(), pytest.raises(Fault, match=f"pid {os.getpid()}"):
        run_iterate(config)
    assert not (Path(config.out) / "iterate_config.json").exists()


# --------------------------------------------------------------------------- signal (in process)


def test_signal_interrupt_names_the_checkpoint_step_and_the_resume(cut):
    folder, said = cut
    assert said == f"the last checkpoint is step 4 in {folder / 'checkpoint'}: rerun the same command with --resume to continue"


def test_signal_interrupt_before_any_checkpoint_says_to_start_over(tmp_path, tokenizer):
    with pytest.raises(KeyboardInterrupt) as interrupted:
        loop_run(tmp_path / "run", tokenizer, steps=4, callbacks=stop_at("step", 2))
    said = str(interrupted.value)
    assert "no checkpoint was saved yet (--save-every 0)" in said and "rerun" in said and "\n" not in said


def test_signal_interrupt_keeps_the_callers_own_words(tmp_path, tokenizer):
    with pytest.raises(KeyboardInterrupt) as interrupted:
        loop_run(tmp_path / "run", tokenizer, steps=4, save_every=1, callbacks=stop_at("step", 3, "killed at 3"))
    assert str(interrupted.value).startswith("killed at 3: the last checkpoint is step 2 in ")


# --------------------------------------------------------------------------- debris


def test_debris_of_an_interrupted_swap_and_final_save_is_cleaned_on_resume(cut, tmp_path, tokenizer):
    folder = copy_of(cut, tmp_path)
    for name in (".checkpoint.k2j4l1", ".final.x8z0q3", ".checkpoint.previous"):
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_bytes(b"half")
    with pytest.warns(UserWarning, match="dropped the record of step 5"):
        resumed = loop_run(folder, tokenizer, steps=6, save_every=2, resume=True)
    assert resumed.steps == 6 and steps_of(folder) == list(range(7))
    assert debris(folder) == [] and not (folder / "checkpoint").exists()


def test_debris_a_kill_between_the_swaps_renames_resumes_from_the_previous_checkpoint(cut, tmp_path, tokenizer):
    folder = copy_of(cut, tmp_path)
    os.replace(folder / "checkpoint", folder / ".checkpoint.previous")  # the first rename done, not the second
    shutil.copytree(folder / ".checkpoint.previous", folder / ".checkpoint.staged1")
    began: list[int] = []
    with pytest.warns(UserWarning, match="dropped the record of step 5"):
        loop_run(folder, tokenizer, steps=6, save_every=2, resume=True, callbacks=started_at(began))
    assert began == [4] and steps_of(folder) == list(range(7)) and debris(folder) == []


def test_debris_a_run_killed_before_its_first_checkpoint_restarts_with_resume(tmp_path, tokenizer):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        loop_run(folder, tokenizer, steps=4, callbacks=stop_at("log", 2))
    (folder / ".final.a1b2c3").mkdir()
    assert steps_of(folder) == [0, 1, 2] and not (folder / "checkpoint").exists()
    with pytest.raises((Fault, ValueError), match="--resume"):  # a plain rerun never drops a log
        loop_run(folder, tokenizer, steps=4)
    began: list[int] = []
    with pytest.warns(UserWarning, match="before its first checkpoint"):
        result = loop_run(folder, tokenizer, steps=4, resume=True, callbacks=started_at(began))
    assert result.steps == 4 and began == [0] and steps_of(folder) == [0, 1, 2, 3, 4] and debris(folder) == []


def test_debris_resume_of_a_finished_run_is_refused_not_trained_again(tmp_path, tokenizer):
    folder = tmp_path / "run"
    loop_run(folder, tokenizer, steps=2)
    weights = (folder / "model.safetensors").read_bytes()
    with pytest.raises((Fault, ValueError), match="--resume"):
        loop_run(folder, tokenizer, steps=2, resume=True)
    assert (folder / "model.safetensors").read_bytes() == weights and steps_of(folder) == [0, 1, 2]


def test_debris_ppo_killed_before_its_first_checkpoint_restarts_with_resume(tmp_path, tiny_model_dir):
    from dpo3d.training.ppo import LOOP_FIELDS, PPOConfig, train_ppo

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(4)))

    def config(**loop) -> PPOConfig:
        settings = {"max_steps": 2, "lr": 1e-3, "cpu": True, **loop}
        assert set(settings) - {"cpu"} <= LOOP_FIELDS
        return PPOConfig(model=str(tiny_model_dir), prompts=str(prompts), reward="contains:yes",
                         loop=LoopConfig(out=tmp_path / "ppo", **settings), rollout_batch=2, minibatch=2,
                         ppo_epochs=1, max_new_tokens=2)

    with pytest.raises(KeyboardInterrupt):
        train_ppo(config(), LoopCallbacks(on_log=lambda record: (_ for _ in ()).throw(KeyboardInterrupt())))
    assert steps_of(tmp_path / "ppo") == [1]
    with pytest.warns(UserWarning, match="before its first checkpoint"):
        result = train_ppo(config(resume=True))
    assert result.steps == 2 and steps_of(tmp_path / "ppo") == [1, 2]


# --------------------------------------------------------------------------- metrics.jsonl on --resume


def test_metrics_logged_after_the_checkpoint_are_dropped_with_a_warning(cut, tmp_path, tokenizer):
    folder = copy_of(cut, tmp_path)
    with pytest.warns(UserWarning, match=r"metrics\.jsonl.*step 5.*step 4"):
        loop_run(folder, tokenizer, steps=6, save_every=2, resume=True)
    assert steps_of(folder) == list(range(7))


def test_metrics_a_torn_last_line_is_repaired_with_a_warning(cut, tmp_path, tokenizer):
    folder = copy_of(cut, tmp_path)
    with open(folder / "metrics.jsonl", "ab") as log:
        log.write(b'{"step": 6, "loss": 0.12')  # the kill came mid-line
    with pytest.warns(UserWarning, match="torn last line"):
        loop_run(folder, tokenizer, steps=6, save_every=2, resume=True)
    assert steps_of(folder) == list(range(7))
    assert (folder / "metrics.jsonl").read_bytes().endswith(b"}\n")


@pytest.mark.parametrize("damage", ["emptied", "deleted", "cut short", "two runs interleaved"])
def test_metrics_that_lost_steps_of_the_checkpoint_are_refused_with_a_reason(cut, tmp_path, tokenizer, damage):
    folder = copy_of(cut, tmp_path)
    log = folder / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    if damage == "emptied":
        log.write_text("")
    elif damage == "deleted":
        log.unlink()
    elif damage == "cut short":
        log.write_text("".join(lines[:3]))  # steps 0-2 of a checkpoint at step 4
    else:
        log.write_text("".join(lines[:4] + lines[1:4]))  # 0 1 2 3 1 2 3
    before = log.read_bytes() if log.exists() else None
    state = (folder / "checkpoint" / "trainer_state.pt").read_bytes()
    with pytest.raises(Fault) as refused:
        loop_run(folder, tokenizer, steps=6, save_every=2, resume=True)
    text = str(refused.value)
    assert "metrics.jsonl" in text and "step 4" in text and "\n" not in text
    assert (log.read_bytes() if log.exists() else None) == before, "a refused resume changes nothing"
    assert (folder / "checkpoint" / "trainer_state.pt").read_bytes() == state


# --------------------------------------------------------------------------- final save


def _fail_saving(model, error: Exception):
    """``model.save_pretrained`` half-writes its weights, then fails as a full disk does."""

    def save_pretrained(folder, *args, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 64)
        raise error

    model.save_pretrained = save_pretrained


FULL_DISK = {
    "OSError": lambda: OSError(errno.ENOSPC, "No space left on device", "model.safetensors"),
    "SafetensorError": lambda: __import__("safetensors").SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"),
}


@pytest.mark.parametrize("kind", sorted(FULL_DISK))
def test_final_save_on_a_full_disk_without_checkpoints_says_so_and_restarts(tmp_path, tokenizer, kind):
    from dpo3d.models.tiny import tiny_causal_lm

    folder = tmp_path / "run"
    model = tiny_causal_lm(tokenizer, seed=0)
    _fail_saving(model, FULL_DISK[kind]())
    with pytest.raises(Fault) as failed:
        loop_run(folder, tokenizer, steps=3, model=model)
    text = str(failed.value)
    assert "no space left" in text.lower() and "--save-every 0" in text and "--resume" in text and "\n" not in text
    assert debris(folder) == [] and not (folder / "model.safetensors").exists()
    with pytest.warns(UserWarning, match="before its first checkpoint"):
        result = loop_run(folder, tokenizer, steps=3, resume=True)
    assert result.steps == 3 and (folder / "model.safetensors").is_file() and steps_of(folder) == [0, 1, 2, 3]


def test_final_save_on_a_full_disk_keeps_the_last_checkpoint_and_names_it(tmp_path, tokenizer):
    from dpo3d.models.tiny import tiny_causal_lm

    folder = tmp_path / "run"
    model = tiny_causal_lm(tokenizer, seed=0)
    real = model.save_pretrained
    calls = []

    def save_pretrained(target, *args, **kwargs):  # checkpoints save; the final save finds the disk full
        calls.append(target)
        if not Path(target).name.startswith(".final."):
            return real(target, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(target) / "model.safetensors"))

    model.save_pretrained = save_pretrained
    with pytest.raises(Fault) as failed:
        loop_run(folder, tokenizer, steps=5, save_every=2, model=model)
    text = str(failed.value)
    assert "step 4" in text and "--resume" in text and "no space left" in text.lower()
    assert saved_step(folder) == 4 and debris(folder) == []
    began: list[int] = []
    with pytest.warns(UserWarning, match="dropped the record of step 5"):
        loop_run(folder, tokenizer, steps=5, save_every=2, resume=True, callbacks=started_at(began))
    assert began == [4] and (folder / "model.safetensors").is_file() and not (folder / "checkpoint").exists()


def test_final_save_a_checkpoint_on_a_full_disk_keeps_the_previous_one_and_names_it(tmp_path, tokenizer):
    from safetensors import SafetensorError

    from dpo3d.models.tiny import tiny_causal_lm

    folder = tmp_path / "run"
    model = tiny_causal_lm(tokenizer, seed=0)
    real, saves = model.save_pretrained, []

    def save_pretrained(target, *args, **kwargs):  # the second checkpoint finds the disk full
        saves.append(target)
        if len(saves) == 2:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(target, *args, **kwargs)

    model.save_pretrained = save_pretrained
    with pytest.raises(Fault) as failed:
        loop_run(folder, tokenizer, steps=6, save_every=2, model=model)
    text = str(failed.value)
    assert "step 4 could not be saved" in text and "step 2 is kept" in text and "no space left" in text.lower()
    assert saved_step(folder) == 2 and debris(folder) == []


# --------------------------------------------------------------------------- pool


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (reaping it is its new parent's business)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_pool_workers_of_judge_math_die_with_their_killed_parent():
    record = json.dumps({"completion": "so \\boxed{2}", "answer": "2"}) + "\n"
    judge = _python("-m", "dpo3d", "judge", "math", "-", "--workers", "2", stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        judge.stdin.write((record * 200).encode())  # past the read-ahead: the pool starts; then stdin stays open
        judge.stdin.flush()
        _wait_for(lambda: len(_children(judge.pid)) >= 2 or judge.poll() is not None, 60, "the pool's workers")
        workers = _children(judge.pid)
        assert judge.poll() is None and len(workers) >= 2
        judge.kill()
        judge.wait()
        deadline = time.monotonic() + 5
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _running(pid)], "workers outlived their parent by 5 s"
    finally:
        if judge.poll() is None:
            judge.kill()
            judge.wait()
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
