"""The one training loop: accelerate, accumulation, the NaN guard, logged steps.

A *task* (:class:`.task.Task`) says what the loss of a set of examples is and what to
measure; this loop does everything else, the same way for SFT, DPO (any registered loss)
and reward models, and the run's folder, resume, logs, trackers and checkpoints go through
:class:`.run_folder.TrainingRun`, which PPO shares. Run it under ``accelerate launch`` for
data parallelism: each process takes its share of every global batch (see batches.py), so
N processes with batch size b train exactly like one process with batch size N·b. Under
FSDP (and DeepSpeed) the probes run on every process and saving gathers the weights first
(see sharding.py).

The loop in parts: :func:`_setup` (optimizer, schedule, resume, run folder), :func:`_steps` (the
steps, their logs and checkpoints), :func:`_step` (one optimizer step over the accumulated
micro-batches), :func:`_log` (a logged step: metrics, probes, the task's check and control) and
the final save, all inside the run folder's :class:`.run_folder.TrainingRun` (its lock, and the
word an interrupt leaves).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import set_seed

from dpo3d.models import host_memory
from dpo3d.models.loading import is_adapted

from . import batches, checkpoint, precision, sharding
from .compiled import compile_layers
from .config import LoopConfig
from .control import keep_best_as_final, save_best, saved_best_step, share_control
from .optimizer import adamw
from .run_files import save_final
from .run_folder import (
    LoopCallbacks,
    RunResult,
    TrainingRun,
    make_accelerator,
    stage,
    stop_unless_finite,
)
from .task import Task

ADVICE = "Lower --lr or check the data, then --resume."


def _scheduler(config: LoopConfig, optimizer, total: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(config.schedule, config.schedule)
    return get_scheduler(name, optimizer, num_warmup_steps=int(config.warmup_ratio * total), num_training_steps=total)


def train(model, tokenizer, task: Task, config: LoopConfig, callbacks: LoopCallbacks | None = None) -> RunResult:
    """Train ``model`` on ``task``; writes OUT/metrics.jsonl, OUT/checkpoint/, the final model into OUT."""
    config.validate()
    on_cpu = precision.run_device(config.cpu).type == "cpu"
    with host_memory.kept(config.keep_host_memory and on_cpu):  # a CPU step then reuses its pages
        return _train(model, tokenizer, task, config, callbacks or LoopCallbacks())


@dataclass
class _Setup:
    """What training needs once set up (on every process)."""

    accelerator: object
    run: TrainingRun
    model: object  # as prepared by accelerate (wrapped for DDP/FSDP)
    unwrapped: object
    optimizer: object
    scheduler: object
    lengths: list[int]
    global_size: int
    per_epoch: int
    total: int
    start: int
    probes: sharding.ProbeRunner


def _setup(model, task: Task, config: LoopConfig, run: TrainingRun) -> _Setup:
    out, accelerator = Path(config.out), run.accelerator
    set_seed(config.seed)
    lengths = task.lengths()
    global_size = batches.global_batch_size(config.batch_size, accelerator.num_processes, config.grad_accum)
    per_epoch = batches.steps_per_epoch(len(lengths), global_size)
    total = config.max_steps or max(1, round(config.epochs * per_epoch))
    task.total_steps = total  # a task that evaluates every N steps also evaluates the last one

    if (low := precision.low_precision_warning(model)) is not None:
        warnings.warn(low, stacklevel=3)
    if config.gradient_checkpointing:
        precision.enable_gradient_checkpointing(model)
    # only what trains: a LoRA run's frozen base gets no optimizer slot
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = adamw(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _scheduler(config, optimizer, total)
    extra_models = task.extra_models()
    sharding.check_supported(accelerator, config.save_every, config.resume, task.probe_gradients, is_adapted(model),
                             whole_weights=bool(extra_models), compiled=config.compile)
    if config.compile:
        compile_layers(model)
    state = run.resume_state(config.resume, model, extra_models, log_every=config.log_every)
    start = state.step if state is not None else 0

    sharding.configure_deepspeed(accelerator, config.batch_size, config.grad_accum, config.max_grad_norm)
    model, optimizer = accelerator.prepare(model, optimizer)
    if state is not None:
        sharding.load_optimizer_state(accelerator, model, optimizer, state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        torch.set_rng_state(state.torch_rng)
        if accelerator.is_main_process:  # the detector and guard read the kept records again
            for message in task.resume(run.logged_records(), saved_best_step(out)):
                warnings.warn(message, stacklevel=3)
        share_control(accelerator, task)
        with accelerator.autocast():
            task.restore(state.step)  # after the extra models are back (a synced reference's log-probs)
    # after the optimizer state is back: FSDP2 sets itself up at its first forward, and the resumed state
    # must find the parameters it was keyed by
    sharding.settle_scoring(accelerator, model, task)
    run.start({"steps": total, "global_batch": global_size, "processes": accelerator.num_processes,
               **config.to_json(), "mixed_precision": accelerator.mixed_precision})
    return _Setup(accelerator, run, model, accelerator.unwrap_model(model), optimizer, scheduler, lengths,
                  global_size, per_epoch, total, start, sharding.ProbeRunner(accelerator, model))


def _step(s: _Setup, task: Task, config: LoopConfig, step: int, global_batch: list[int]):
    """One optimizer step: the micro-batches' losses and gradients, the NaN guard, clipping, the update.
    Returns the learning rate it trained at, the gradient norm, the collected per-example metrics and
    the last micro-batch's indices."""
    accelerator, model, out = s.accelerator, s.model, Path(config.out)
    rank, processes = accelerator.process_index, accelerator.num_processes
    deepspeed = sharding.is_deepspeed(accelerator)
    model.train()
    collected: dict[str, list[torch.Tensor]] = defaultdict(list)
    finite = True
    indices: list[int] = []
    for micro in range(config.grad_accum):
        indices = batches.micro_batch(global_batch, s.lengths, micro, rank, processes, config.grad_accum)
        if deepspeed:  # DeepSpeed scales by its accumulation steps and steps itself after the last one
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, metrics = task.loss(model, indices)
                stop_unless_finite(accelerator, bool(torch.isfinite(loss.detach())), out, step + 1, "loss", ADVICE)
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
    stop_unless_finite(accelerator, finite, out, step + 1, "loss", ADVICE)
    grad_norm = sharding.gradient_norm(accelerator, model, config.max_grad_norm)
    lr = s.optimizer.param_groups[0]["lr"]  # the rate this step trains at (the scheduler then moves on)
    s.optimizer.step()
    if not accelerator.optimizer_step_was_skipped:  # fp16: an overflowing step is skipped, not scheduled
        s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return lr, grad_norm, collected, indices


def _after_update(s: _Setup, task: Task, callbacks: LoopCallbacks, step: int) -> None:
    """The task's update after optimizer step ``step`` (a synced reference), reported as a stage when it did one."""
    began = time.perf_counter()
    with s.accelerator.autocast():  # a recomputed reference scores as the policy does
        changed = task.after_update(s.unwrapped, step)
    if changed:
        callbacks.on_stage(f"reference sync at step {step}", time.perf_counter() - began)


def _measure(s: _Setup, task: Task, step: int, indices: list[int]) -> dict:
    """The task's probes at a logged step, in eval mode, under the run's autocast."""
    probes = s.probes
    indices = probes.same_indices(indices)
    was_training = probes.model.training
    probes.model.eval()
    try:
        with s.accelerator.autocast():  # the probes and evaluations see the model as training does
            return task.probe(probes.model, step, indices)
    finally:
        probes.model.train(was_training)


def _log(s: _Setup, task: Task, tokenizer, out: Path, record: dict, indices: list[int]):
    """A logged step (step 0 included): the probes, the task's check on the main process, the record
    written, then the task's decision shared by every process and the best state saved if it says so."""
    if s.probes.runs_here:
        record.update(_measure(s, task, record["step"], indices))
    if s.accelerator.is_main_process:
        record = s.run.log(record, task.check(record))
    control = share_control(s.accelerator, task)
    if control.save_best:
        save_best(s.accelerator, s.model, s.unwrapped, tokenizer, out, record["step"], save_final)
    return record, control


def _train(model, tokenizer, task: Task, config: LoopConfig, callbacks: LoopCallbacks) -> RunResult:
    out = Path(config.out)
    accelerator, trackers_wanted = make_accelerator(config.cpu, config.mixed_precision, config.report_to, out)
    # the run folder's lock, log and trackers for everything from opening the folder to the final model
    with TrainingRun(out, accelerator, trackers_wanted, callbacks, config.save_every) as run:
        s = _setup(model, task, config, run)
        stopped_at, last_record = _steps(s, task, tokenizer, config, callbacks)
        weights = sharding.full_state_dict(accelerator, s.model)

        def keep_best() -> None:
            if stopped_at is not None and saved_best_step(out) is not None:
                keep_best_as_final(out)  # a stop keeps the best state, not the one it stopped at

        run.finish(s.unwrapped, tokenizer, stopped_at or s.total, weights, before_cleanup=keep_best)
    return RunResult(stopped_at or s.total, out, last_record, stopped_at)


def _steps(s: _Setup, task: Task, tokenizer, config: LoopConfig, callbacks: LoopCallbacks) -> tuple[int | None, dict]:
    """The optimizer steps from ``s.start``, their logs and checkpoints: the step a task's control stopped
    at (None: none did) and the last logged record."""
    out, accelerator = Path(config.out), s.accelerator
    callbacks.on_start(s.start, s.total)
    stopped_at: int | None = None
    last_record: dict = {}
    plans: dict[int, list[list[int]]] = {}
    if s.start == 0:
        with stage(callbacks, "step-0 measurements"):
            _log(s, task, tokenizer, out, {"step": 0}, [])
    training = time.perf_counter()
    for step in range(s.start, s.total):
        began = time.perf_counter()
        epoch = step // s.per_epoch
        if epoch not in plans:
            plans = {epoch: batches.epoch_plan(s.lengths, s.global_size, config.seed, epoch)}
        lr, grad_norm, collected, indices = _step(s, task, config, step, plans[epoch][step % s.per_epoch])
        done = step + 1
        _after_update(s, task, callbacks, done)
        callbacks.on_step(done)
        if done % config.log_every == 0 or done == s.total:
            means = {key: float(accelerator.gather(torch.cat(values)).mean()) for key, values in collected.items()}
            record = {"step": done, "epoch": round(step / s.per_epoch + 1 / s.per_epoch, 4), "lr": lr,
                      "grad_norm": float(grad_norm), **means,
                      "examples_per_s": s.global_size / (time.perf_counter() - began)}
            last_record, control = _log(s, task, tokenizer, out, record, indices)
            if control.stop:
                stopped_at = done
                break
        if config.save_every and done % config.save_every == 0 and done < s.total:
            weights = sharding.full_state_dict(accelerator, s.model)  # collectives: every process takes part
            optimizer_state = sharding.optimizer_state(accelerator, s.model, s.optimizer)
            state = checkpoint.TrainerState(done, optimizer_state, s.scheduler.state_dict(), torch.get_rng_state())
            s.run.save_checkpoint(s.unwrapped, tokenizer, state, task.extra_models(), state_dict=weights)
    trained = (stopped_at or s.total) - s.start
    callbacks.on_stage(f"training ({trained} step{'s' if trained != 1 else ''})", time.perf_counter() - training)
    return stopped_at, last_record
