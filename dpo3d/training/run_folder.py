"""The bookkeeping every trainer shares: the accelerator, the run folder, resume, run_config.json,
the metrics log and trackers, checkpoints, and the final save.

The shared loop (:mod:`.loop`) and PPO (:mod:`.ppo`) differ in what a step does (one batch, or a
rollout and several epochs of minibatch updates over it); everything around the steps is here,
in :class:`TrainingRun`, so a fix to it is made once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from safetensors import SafetensorError

from dpo3d.data.faults import Fault, os_error_text
from dpo3d.data.records import json_safe, write_json
from dpo3d.data.run_lock import FolderInUse, RunLock
from dpo3d.data.run_log import AppendLog, read_log

from . import checkpoint, precision, sharding, tracking
from .control import BEST
from .run_files import holds_final_model, reconcile_metrics, remove_debris, save_final, saved_step


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


class RunFolderTaken(Fault, ValueError):
    """The folder holds a run this one may not start in, or a resume that cannot go on as asked (a
    ValueError too, as these refusals were before they were Faults)."""


class CheckpointFailed(Fault):
    """A checkpoint could not be written (a full disk); the text names the one that is kept."""


class FinalSaveFailed(Fault):
    """The final model could not be written; the text says what of the run is kept."""


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
    saved, found = saved_step(out), checkpoint.latest(out)
    where = (f"the last good checkpoint is {found} (step {saved})" if saved is not None else
             f"the checkpoint in {found} cannot be read" if found is not None else "no checkpoint was saved yet")
    raise NonFiniteLoss(f"{what} became non-finite at step {step}; stopped before applying it; {where}. {advice}")


def _os_reason(err: Exception, path: Path) -> str:
    """A failed write's reason as one line about ``path``: an OSError's, or the OS error a safetensors
    error carries (its text ends in "(os error N)"), else its own text."""
    code = err.errno if isinstance(err, OSError) else None
    if code is None and (found := re.search(r"os error (\d+)", str(err))):
        code = int(found.group(1))
    if code is None:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return os_error_text(OSError(code, os.strerror(code), str(path)))


class TrainingRun:
    """One run's folder and bookkeeping, on every process (files are written by the main one).

    Use it as a context manager around everything the run does in its folder: entering takes the
    folder's lock (:mod:`dpo3d.data.run_lock`; the main process holds it, every process is refused
    with it), leaving closes the log and trackers and gives the lock back, and an interrupt (Ctrl-C,
    SIGTERM) leaves it as a KeyboardInterrupt that says which step is saved and how to go on.
    ``resume_state`` opens the folder (a new run refuses one that holds a run; ``--resume`` loads
    the last checkpoint, or starts over a run stopped before its first one), ``start`` writes
    run_config.json and opens the metrics log and trackers, ``log`` records a logged step,
    ``save_checkpoint`` a resumable state, ``finish`` the final model.
    """

    def __init__(self, out: Path, accelerator, trackers_wanted: list[str], callbacks: LoopCallbacks,
                 save_every: int = 0):
        self.out, self.accelerator, self.callbacks = Path(out), accelerator, callbacks
        self.trackers_wanted = trackers_wanted
        self.save_every = save_every
        self.main = accelerator.is_main_process
        self.metrics_path = self.out / "metrics.jsonl"
        self.trackers: tracking.Trackers | None = None
        self.metrics: AppendLog | None = None
        self.lock = RunLock(self.out)
        self.final_saved = False

    # ------------------------------------------------------------------ every process agrees

    def _agree(self, error: Exception | None) -> None:
        """Raise ``error`` (found on the main process) there, and a line naming it on every other process."""
        if getattr(self.accelerator, "num_processes", 1) > 1:
            from accelerate.utils import broadcast_object_list

            text = broadcast_object_list([str(error) if error is not None else None], from_process=0)[0]
            if text is not None and not self.main:
                raise Fault(f"the main process stopped: {text}")
        if error is not None:
            raise error

    def _on_main(self, work: Callable[[], None]) -> None:
        """``work`` on the main process; a user-facing failure there stops every process."""
        error = None
        if self.main:
            try:
                work()
            except (Fault, ValueError) as err:
                error = err
        self._agree(error)

    # ------------------------------------------------------------------ the folder

    def resume_state(self, resume: bool, model, extra_models: dict | None = None, log_every: int = 1,
                     logs_step_zero: bool = True) -> checkpoint.TrainerState | None:
        """The checkpoint to resume from, its weights loaded into ``model`` (and ``extra_models``); None: a new
        run (or one started over). ``log_every`` and ``logs_step_zero``: when the run logs (the log is checked
        against the checkpoint's step; run_config.json's own log_every wins)."""
        self._on_main(lambda: self._open(resume, log_every, logs_step_zero))
        self.accelerator.wait_for_everyone()
        found = checkpoint.latest(self.out) if resume else None
        return checkpoint.load(found, model, extra_models) if found is not None else None

    def _open(self, resume: bool, log_every: int, logs_step_zero: bool) -> None:
        """The main process's part of opening the folder: refusals, repairs, debris removed."""
        out = self.out
        if out.is_dir():
            checkpoint.recover_interrupted_swap(out)
        step = saved_step(out)
        if not resume:
            if checkpoint.latest(out) is not None:
                raise RunFolderTaken(f"{out} already holds a run (its checkpoint is step {step}): pass --resume to "
                                     "continue it, or choose another --out")
            if self.metrics_path.exists():
                what = ("a finished run (--resume has nothing to continue)" if holds_final_model(out) else
                        "a run stopped before its first checkpoint (pass --resume to start it over)")
                raise RunFolderTaken(f"{out} already holds {what}: choose another --out")
        elif checkpoint.latest(out) is None:
            if holds_final_model(out):
                raise RunFolderTaken(f"--resume: {out} holds a finished run (its final model, no checkpoint): there "
                                     "is nothing to continue; choose another --out to train again")
            if self.metrics_path.exists() or (out / "run_config.json").exists():
                logged = [record.get("step") for record in read_log(self.metrics_path)] if self.metrics_path.exists() else []
                dropped = f" (its metrics.jsonl, {len(logged)} record(s), dropped)" if logged else ""
                self.metrics_path.unlink(missing_ok=True)
                shutil.rmtree(out / BEST, ignore_errors=True)  # the stopped run's best state is not this one's
                warnings.warn(f"--resume: {out} holds a run stopped before its first checkpoint: starting it over "
                              f"from step 0{dropped}", stacklevel=4)
        elif step is not None:  # (an unreadable state file: loading the checkpoint says what is wrong with it)
            said = reconcile_metrics(self.metrics_path, step, self._logged_every(log_every), logs_step_zero)
            if said:
                warnings.warn(said, stacklevel=4)
        remove_debris(out)

    def _logged_every(self, default: int) -> int:
        """The run's own log_every (run_config.json), else ``default``."""
        try:
            recorded = json.loads((self.out / "run_config.json").read_text(encoding="utf-8")).get("log_every")
        except (OSError, ValueError):
            return default
        return recorded if isinstance(recorded, int) and recorded > 0 else default

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
        failure = None
        if self.main:
            kept = saved_step(self.out)
            try:
                path = checkpoint.save(self.out, unwrapped, tokenizer, state, extra_models, state_dict=state_dict)
            except (OSError, SafetensorError) as err:  # the swap never began: the previous checkpoint is whole
                before = (f"the checkpoint of step {kept} is kept: free space, then rerun the same command with "
                          "--resume to continue from it" if kept is not None else
                          "no earlier checkpoint was saved: free space, then rerun the same command with --resume "
                          "to start over")
                failure = CheckpointFailed(f"the checkpoint of step {state.step} could not be saved "
                                           f"({_os_reason(err, self.out)}); {before}")
            else:
                self.callbacks.on_save(state.step, path)
        self._agree(failure)
        self.accelerator.wait_for_everyone()

    def finish(self, unwrapped, tokenizer, step: int, state_dict: dict | None = None,
               extra_models: dict | None = None, before_cleanup: Callable[[], None] = lambda: None) -> None:
        """The final model into OUT (``extra_models`` into OUT/<name>), then the checkpoint removed. A failed
        save (a full disk) publishes nothing, keeps the checkpoint and raises FinalSaveFailed, which says
        what of the run is kept."""
        with stage(self.callbacks, "saving the final model"):
            failure = None
            if self.main:
                try:
                    save_final(unwrapped, tokenizer, self.out, state_dict, extra_models)
                except (OSError, SafetensorError) as err:
                    failure = FinalSaveFailed(self._final_save_failed(err))
            self._agree(failure)
            if self.main:
                self.final_saved = True
                before_cleanup()
                shutil.rmtree(self.out / checkpoint.LATEST, ignore_errors=True)
                self.callbacks.on_save(step, self.out)
        self.accelerator.wait_for_everyone()

    def _final_save_failed(self, err: Exception) -> str:
        reason = _os_reason(err, self.out)
        step = saved_step(self.out)
        if step is not None:
            kept = (f"the checkpoint of step {step} is kept in {self.out / checkpoint.LATEST}: rerun the same "
                    "command with --resume to continue from it")
        else:
            why = "--save-every 0" if not self.save_every else f"none was due yet: --save-every {self.save_every}"
            kept = (f"no checkpoint was kept ({why}), so the training is lost: rerun the same command with --resume "
                    "to train again from the start")
        return f"the final model could not be saved ({reason}); {kept}"

    # ------------------------------------------------------------------ leaving

    def _interrupted(self, error: BaseException | None) -> str:
        """What an interrupt leaves: the folder made whole (a swap put back, staging removed), and the line
        that says which step is saved and how to go on."""
        with contextlib.suppress(OSError):
            remove_debris(self.out)
        step = saved_step(self.out)
        if self.final_saved:
            said = f"the final model is saved in {self.out}"
        elif step is not None:
            said = (f"the last checkpoint is step {step} in {self.out / checkpoint.LATEST}: rerun the same command "
                    "with --resume to continue")
        else:
            why = "--save-every 0" if not self.save_every else f"the first comes at step {self.save_every}"
            said = f"no checkpoint was saved yet ({why}): rerun the same command with --resume to start over"
        own = str(error) if error is not None else ""
        return f"{own}: {said}" if own else said

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.trackers is not None:
            self.trackers.end()
            self.trackers = None

    def __enter__(self) -> TrainingRun:
        refused = None
        if self.main:
            try:
                self.lock.acquire()
            except FolderInUse as err:
                refused = err
        self._agree(refused)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        message = None
        try:
            self.close()
            if kind is not None and issubclass(kind, KeyboardInterrupt) and self.main:
                message = self._interrupted(error)
        finally:
            self.lock.release()
        if message is not None:
            raise KeyboardInterrupt(message) from None
