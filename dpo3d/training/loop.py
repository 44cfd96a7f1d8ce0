"""The one training loop: accelerate, accumulation, checkpoints, resume, NaN guard, metrics.

A *task* says what the loss of a set of examples is and what to measure; this
loop does everything else, the same way for SFT, DPO (any registered loss) and
reward models. Run it under ``accelerate launch`` for data parallelism: each
process takes its share of every global batch (see batches.py), so N processes
with batch size b train exactly like one process with batch size N·b. Under FSDP
(and DeepSpeed) the probes run on every process and saving gathers the weights
first (see sharding.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed

from dpo3d.data.records import json_safe, write_json, write_records
from dpo3d.data.run_log import AppendLog, read_log
from dpo3d.models import host_memory
from dpo3d.models.loading import is_adapted, save_options

from . import batches, checkpoint, precision, sharding, tracking
from .config import LoopConfig
from .control import keep_best_as_final, save_best, saved_best_step, share_control


class Task(Protocol):
    def lengths(self) -> list[int]:
        """Token length of each example (for length-grouped batches)."""

    def loss(self, model, indices: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean loss over ``indices`` and per-example metric tensors (shape ``(len(indices),)``)."""

    def probe(self, model, step: int, indices: list[int]) -> dict[str, float]:
        """Extra measurements at a logged step (``indices``: the main process's last micro-batch); on the main
        process, or under sharded parameters on every process with the same result (only the main one logs it)."""

    def check(self, record: dict) -> list[str]:
        """Warnings raised by a logged record (the live 3D detector; a guard's actions), on the main process.
        A task may also have ``control() -> StepControl`` (what that check decided), ``apply_control(state)``
        (set it on the other processes) and ``resume(records, saved_best_step) -> list[str]`` (replay a
        resumed run's logged records)."""


def probe_gradients(task) -> bool:
    """Whether the task's probes take parameter gradients: its ``probe_gradients`` if it says, else DPO's
    gradient split (``settings.grad_split_every``)."""
    if hasattr(task, "probe_gradients"):
        return bool(task.probe_gradients)
    return bool(getattr(getattr(task, "settings", None), "grad_split_every", 0))


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


def _scheduler(config: LoopConfig, optimizer, total: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(config.schedule, config.schedule)
    return get_scheduler(name, optimizer, num_warmup_steps=int(config.warmup_ratio * total), num_training_steps=total)


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


def train(model, tokenizer, task: Task, config: LoopConfig, callbacks: LoopCallbacks | None = None) -> RunResult:
    """Train ``model`` on ``task``; writes OUT/metrics.jsonl, OUT/checkpoint/, the final model into OUT."""
    config.validate()
    on_cpu = precision.run_device(config.cpu).type == "cpu"
    with host_memory.kept(config.keep_host_memory and on_cpu):  # a CPU step then reuses its pages
        return _train(model, tokenizer, task, config, callbacks or LoopCallbacks())


def _train(model, tokenizer, task: Task, config: LoopConfig, callbacks: LoopCallbacks) -> RunResult:
    out = Path(config.out)
    accelerator, trackers_wanted = make_accelerator(config.cpu, config.mixed_precision, config.report_to, out)
    set_seed(config.seed)
    processes, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    lengths = task.lengths()
    global_size = batches.global_batch_size(config.batch_size, processes, config.grad_accum)
    per_epoch = batches.steps_per_epoch(len(lengths), global_size)
    total = config.max_steps or max(1, round(config.epochs * per_epoch))
    metrics_path = out / "metrics.jsonl"
    if hasattr(task, "total_steps"):  # tasks that evaluate every N steps also evaluate the last one
        task.total_steps = total

    if (low := precision.low_precision_warning(model)) is not None:
        warnings.warn(low, stacklevel=2)
    if config.gradient_checkpointing:
        precision.enable_gradient_checkpointing(model)
    # only what trains: a LoRA run's frozen base gets no optimizer slot
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _scheduler(config, optimizer, total)
    sharding.check_supported(accelerator, config.save_every, config.resume, probe_gradients(task), is_adapted(model))
    state = open_run(out, config.resume, accelerator, model)
    start = state.step if state is not None else 0

    sharding.configure_deepspeed(accelerator, config.batch_size, config.grad_accum, config.max_grad_norm)
    deepspeed = sharding.is_deepspeed(accelerator)
    model, optimizer = accelerator.prepare(model, optimizer)
    if state is not None:
        sharding.load_optimizer_state(accelerator, model, optimizer, state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        torch.set_rng_state(state.torch_rng)
        if main:
            truncate_metrics(metrics_path, start)
            if hasattr(task, "resume"):  # the detector and guard read the kept records again
                for message in task.resume(list(read_log(metrics_path)) if metrics_path.exists() else [],
                                           saved_best_step(out)):
                    warnings.warn(message, stacklevel=2)
        share_control(accelerator, task)
    # after the optimizer state is back: FSDP2 sets itself up at its first forward, and the resumed state
    # must find the parameters it was keyed by
    sharding.settle_scoring(accelerator, model, task)
    run_config = {"steps": total, "global_batch": global_size, "processes": processes, **config.to_json(),
                  "mixed_precision": accelerator.mixed_precision}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(run_config, out / "run_config.json")
    accelerator.wait_for_everyone()
    trackers = tracking.Trackers(accelerator, trackers_wanted, out, run_config)
    log = AppendLog(metrics_path) if main else None
    unwrapped = accelerator.unwrap_model(model)
    probes = sharding.ProbeRunner(accelerator, model)

    def measure(step: int, indices: list[int]) -> dict:
        indices = probes.same_indices(indices)
        was_training = probes.model.training
        probes.model.eval()
        try:
            with accelerator.autocast():  # the probes and evaluations see the model as training does
                return task.probe(probes.model, step, indices)
        finally:
            probes.model.train(was_training)

    callbacks.on_start(start, total)
    if start == 0 and probes.runs_here:
        with stage(callbacks, "step-0 measurements"):
            record = {"step": 0, **measure(0, [])}
        if main:
            for warning in task.check(record):
                callbacks.on_warning(warning)
            record = json_safe(record)
            log.write(record)
            trackers.log(record)
            callbacks.on_log(record)
    if start == 0 and share_control(accelerator, task).save_best:
        save_best(accelerator, model, unwrapped, tokenizer, out, 0, save_final)
    stopped_at: int | None = None

    advice = "Lower --lr or check the data, then --resume."
    plans: dict[int, list[list[int]]] = {}
    last_record: dict = {}
    training = time.perf_counter()
    try:
        for step in range(start, total):
            began = time.perf_counter()
            epoch = step // per_epoch
            if epoch not in plans:
                plans = {epoch: batches.epoch_plan(lengths, global_size, config.seed, epoch)}
            global_batch = plans[epoch][step % per_epoch]
            model.train()
            collected: dict[str, list[torch.Tensor]] = defaultdict(list)
            finite = True
            indices: list[int] = []
            for micro in range(config.grad_accum):
                indices = batches.micro_batch(global_batch, lengths, micro, rank, processes, config.grad_accum)
                if deepspeed:  # DeepSpeed scales by its accumulation steps and steps itself after the last one
                    with accelerator.accumulate(model):
                        with accelerator.autocast():
                            loss, metrics = task.loss(model, indices)
                        stop_unless_finite(accelerator, bool(torch.isfinite(loss.detach())), out, step + 1, "loss", advice)
                        accelerator.backward(loss)
                else:
                    sync = contextlib.nullcontext() if micro == config.grad_accum - 1 else accelerator.no_sync(model)
                    with sync:
                        with accelerator.autocast():
                            loss, metrics = task.loss(model, indices)
                        finite = finite and bool(torch.isfinite(loss.detach()))
                        accelerator.backward(loss / config.grad_accum)
                for key, value in metrics.items():
                    collected[key].append(value.detach().float().reshape(-1))
            stop_unless_finite(accelerator, finite, out, step + 1, "loss", advice)
            grad_norm = sharding.gradient_norm(accelerator, model, config.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step trains at (the scheduler then moves on)
            optimizer.step()
            if not accelerator.optimizer_step_was_skipped:  # fp16: an overflowing step is skipped, not scheduled
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            callbacks.on_step(done)

            if done % config.log_every == 0 or done == total:
                means = {key: float(accelerator.gather(torch.cat(values)).mean()) for key, values in collected.items()}
                seconds = time.perf_counter() - began
                record = {
                    "step": done,
                    "epoch": round(step / per_epoch + 1 / per_epoch, 4),
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    **means,
                    "examples_per_s": global_size / seconds,
                }
                if probes.runs_here:
                    record.update(measure(done, indices))
                if main:
                    raised = task.check(record)
                    for warning in raised:
                        callbacks.on_warning(warning)
                    record = json_safe(record)
                    log.write(record)
                    trackers.log(record)
                    trackers.warnings(done, raised)
                    callbacks.on_log(record)
                last_record = record
                control = share_control(accelerator, task)
                if control.save_best:
                    save_best(accelerator, model, unwrapped, tokenizer, out, done, save_final)
                if control.stop:
                    stopped_at = done
                    break
            if config.save_every and done % config.save_every == 0 and done < total:
                weights = sharding.full_state_dict(accelerator, model)  # collectives: every process takes part
                optimizer_state = sharding.optimizer_state(accelerator, model, optimizer)
                if main:
                    path = checkpoint.save(
                        out, unwrapped, tokenizer,
                        checkpoint.TrainerState(done, optimizer_state, scheduler.state_dict(), torch.get_rng_state()),
                        state_dict=weights,
                    )
                    callbacks.on_save(done, path)
                accelerator.wait_for_everyone()
    finally:
        if log is not None:
            log.close()
        trackers.end()
    trained = (stopped_at or total) - start
    callbacks.on_stage(f"training ({trained} step{'s' if trained != 1 else ''})", time.perf_counter() - training)

    with stage(callbacks, "saving the final model"):
        weights = sharding.full_state_dict(accelerator, model)
        if main:
            save_final(unwrapped, tokenizer, out, weights)
            if stopped_at is not None and saved_best_step(out) is not None:
                keep_best_as_final(out)  # a stop keeps the best state, not the one it stopped at
            shutil.rmtree(out / checkpoint.LATEST, ignore_errors=True)
            callbacks.on_save(stopped_at or total, out)
    accelerator.wait_for_everyone()
    return RunResult(stopped_at or total, out, last_record, stopped_at)
