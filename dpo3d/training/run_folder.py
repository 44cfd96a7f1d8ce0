"""The bookkeeping every trainer shares: the accelerator, the run folder, resume, run_config.json,
the metrics log and trackers, checkpoints, and the final save.

The shared loop (:mod:`.loop`) and PPO (:mod:`.ppo`) differ in what a step does (one batch, or a
rollout and several epochs of minibatch updates over it); everything around the steps is here,
in :class:`TrainingRun`, so a fix to it is made once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

from dpo3d.data.records import json_safe, write_json, write_records
from dpo3d.data.run_log import AppendLog, read_log
from dpo3d.models.loading import save_options

from . import checkpoint, precision, sharding, tracking


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf: the run stopped before applying that step."""


@dataclass
class LoopCallbacks:
    on_start: Callable[[int, int], None] = lambda start, total: None
    on_step: Callable[[int], None] = lambda step: None
    on_log: Callable[[dict], None] = lambda record: None
    on_warning: Callable[[str], None] = lambda message: None
    on_save: Callable[[int, Path], None] = lambda step, path: None
    on_stage: Callable[[str, float], None] = lambda name, seconds: None  # a stage of the run ended: its seconds


@contextlib.contextmanager
def stage(callbacks: LoopCallbacks, name: str):
    """Report the time the block took as the stage ``name`` (when it ends without an exception)."""
    began = time.perf_counter()
    yield
    callbacks.on_stage(name, time.perf_counter() - began)


@dataclass
class RunResult:
    steps: int
    out: Path
    last_record: dict = field(default_factory=dict)
    stopped_at: int | None = None  # the step a task's control stopped the run at (a guard's stop)


def folder_state(folder: Path) -> str:
    """A run folder as a rerun finds it: ``new`` (none), ``done`` (its summary.json, written last), ``resume``
    (a checkpoint to continue from: one a kill left between the two renames of a swap included, which the
    loop puts back) or ``restart`` (killed before its first checkpoint: nothing in it can be continued)."""
    folder = Path(folder)
    if not folder.exists():
        return "new"
    if (folder / "summary.json").is_file():
        return "done"
    swapped = (folder / f".{checkpoint.LATEST}.previous").is_dir()
    return "resume" if checkpoint.latest(folder) is not None or swapped else "restart"


def save_final(model, tokenizer, out: Path, state_dict: dict | None = None) -> None:
    """The trained model's files into OUT itself (each file replaced atomically). ``state_dict``: the
    weights gathered from a sharded model (``model`` then only gives the config and the file layout)."""
    staging = Path(tempfile.mkdtemp(prefix=".final.", dir=out))
    try:
        model.save_pretrained(staging, **checkpoint.weights_option(state_dict), **save_options(model))
        tokenizer.save_pretrained(staging)
        for item in staging.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics logged after the checkpoint we resume from (the killed run got further)."""
    kept = [record for record in read_log(path) if record.get("step", 0) <= step]
    write_records(kept, path) if kept else path.unlink(missing_ok=True)


def open_run(out: Path, resume: bool, accelerator, model, extra_models: dict | None = None) -> checkpoint.TrainerState | None:
    """The state to resume from (weights loaded into ``model`` and ``extra_models``), or None for a new run.

    A new run refuses a folder that already holds one; ``--resume`` first repairs a checkpoint swap
    a kill interrupted, then needs a checkpoint to be there.
    """
    metrics_path = out / "metrics.jsonl"
    if not resume:
        if metrics_path.exists() or checkpoint.latest(out) is not None:
            raise ValueError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
        return None
    if accelerator.is_main_process:
        checkpoint.recover_interrupted_swap(out)
    accelerator.wait_for_everyone()
    found = checkpoint.latest(out)
    if found is None:
        raise ValueError(f"--resume: {out} holds no checkpoint to resume from")
    return checkpoint.load(found, model, extra_models)


def make_accelerator(cpu: bool, mixed_precision: str | None, report_to: str, out: Path) -> tuple[Accelerator, list[str]]:
    """The run's Accelerator (its device, mixed precision and trackers) and the tracker names asked for."""
    names = tracking.parse(report_to)
    tracking.check_available(names)
    wanted = precision.resolve(mixed_precision)
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != wanted and shared.get("distributed_type") != DistributedType.DEEPSPEED:
        # another run in this process (a notebook, the tests) with another precision: accelerate keeps its state
        # in a process-wide singleton that refuses changes, and no run is in flight between two calls of train()
        AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=cpu, mixed_precision=wanted, log_with=names or None,
                              project_dir=str(tracking.logging_dir(out)) if names else None)
    precision.check_device(accelerator.mixed_precision, accelerator.device)
    sharding.check_launch(accelerator)
    return accelerator, names


def stop_unless_finite(accelerator, finite: bool, out: Path, step: int, what: str, advice: str) -> None:
    """Raise NonFiniteLoss on every process when any process saw a non-finite loss at ``step``."""
    if sharding.on_every_process(accelerator, [finite])[0]:
        return
    saved = checkpoint.latest(out)
    where = (f"the last good checkpoint is {saved} (step {torch.load(saved / checkpoint.STATE_FILE, weights_only=True)['step']})"
             if saved else "no checkpoint was saved yet")
    raise NonFiniteLoss(f"{what} became non-finite at step {step}; stopped before applying it; {where}. {advice}")


class TrainingRun:
    """One run's folder and bookkeeping, on every process (files are written by the main one).

    ``resume_state`` opens the folder (a new run refuses one that holds a run; ``--resume`` loads the
    last checkpoint and drops the metrics logged after it), ``start`` writes run_config.json and opens
    the metrics log and trackers, ``log`` records a logged step, ``save_checkpoint`` a resumable state,
    ``finish`` the final model. Use it as a context manager: the log and trackers close on the way out.
    """

    def __init__(self, out: Path, accelerator, trackers_wanted: list[str], callbacks: LoopCallbacks):
        self.out, self.accelerator, self.callbacks = Path(out), accelerator, callbacks
        self.trackers_wanted = trackers_wanted
        self.main = accelerator.is_main_process
        self.metrics_path = self.out / "metrics.jsonl"
        self.trackers: tracking.Trackers | None = None
        self.metrics: AppendLog | None = None

    def resume_state(self, resume: bool, model, extra_models: dict | None = None) -> checkpoint.TrainerState | None:
        """The checkpoint to resume from, its weights loaded into ``model`` (and ``extra_models``); None: a new run."""
        state = open_run(self.out, resume, self.accelerator, model, extra_models)
        if state is not None and self.main:
            truncate_metrics(self.metrics_path, state.step)
        return state

    def logged_records(self) -> list[dict]:
        """What the run logged so far (a resumed run's records up to its checkpoint)."""
        return list(read_log(self.metrics_path)) if self.metrics_path.exists() else []

    def start(self, run_config: dict) -> None:
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(run_config, self.out / "run_config.json")
        self.accelerator.wait_for_everyone()
        self.trackers = tracking.Trackers(self.accelerator, self.trackers_wanted, self.out, run_config)
        self.metrics = AppendLog(self.metrics_path) if self.main else None

    def log(self, record: dict, raised: list[str] | None = None) -> dict:
        """On the main process: the record (made JSON-safe) into metrics.jsonl and the trackers, the warnings
        it raised to the callbacks (and, past step 0, to the trackers). Returns the record as written."""
        if not self.main:
            return record
        for warning in raised or []:
            self.callbacks.on_warning(warning)
        record = json_safe(record)
        self.metrics.write(record)
        self.trackers.log(record)
        if record.get("step"):
            self.trackers.warnings(record["step"], raised or [])
        self.callbacks.on_log(record)
        return record

    def save_checkpoint(self, unwrapped, tokenizer, state: checkpoint.TrainerState, extra_models: dict | None = None,
                        state_dict: dict | None = None) -> None:
        """A resumable checkpoint of step ``state.step`` (written by the main process; every process waits)."""
        if self.main:
            path = checkpoint.save(self.out, unwrapped, tokenizer, state, extra_models, state_dict=state_dict)
            self.callbacks.on_save(state.step, path)
        self.accelerator.wait_for_everyone()

    def finish(self, unwrapped, tokenizer, step: int, state_dict: dict | None = None,
               extra_models: dict | None = None, before_cleanup: Callable[[], None] = lambda: None) -> None:
        """The final model into OUT (``extra_models`` into OUT/<name>), then the checkpoint removed."""
        with stage(self.callbacks, "saving the final model"):
            if self.main:
                save_final(unwrapped, tokenizer, self.out, state_dict)
                for name, model in (extra_models or {}).items():
                    shutil.rmtree(self.out / name, ignore_errors=True)
                    model.save_pretrained(self.out / name, **save_options(model))
                before_cleanup()
                shutil.rmtree(self.out / checkpoint.LATEST, ignore_errors=True)
                self.callbacks.on_save(step, self.out)
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.trackers is not None:
            self.trackers.end()

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
