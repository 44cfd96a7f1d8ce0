"""Options of the training commands (sft, train-dpo, train-rm, ppo, study), declared once, and the live display.

Their defaults are LoopConfig's and LoRAConfig's; the options every command shares (--model, --dtype,
--device, --limit, --resume, ...) are cli/options.py's."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dpo3d.models.lora import LoRAConfig
from dpo3d.training import precision
from dpo3d.training.config import LoopConfig
from dpo3d.training.loop import LoopCallbacks

from . import options
from .common import console

OUT = typer.Option(..., "--out", "-o", help="Run folder: the final Hugging Face model, run_config.json, metrics.jsonl, checkpoint/.")
LR = typer.Option(LoopConfig.lr, "--lr", help="Peak learning rate (AdamW).")
BATCH_SIZE = typer.Option(LoopConfig.batch_size, "--batch-size", "-b", min=1, help="Examples per device per micro-batch.")
GRAD_ACCUM = typer.Option(LoopConfig.grad_accum, "--grad-accum", min=1, help="Micro-batches per optimizer step (global batch = batch × processes × this).")
EPOCHS = typer.Option(LoopConfig.epochs, "--epochs", help="Passes over the data (fractions allowed).")
MAX_STEPS = options.max_steps(LoopConfig.max_steps)
WARMUP = typer.Option(LoopConfig.warmup_ratio, "--warmup-ratio", help="Share of the steps spent warming the learning rate up.")
SCHEDULE = typer.Option(LoopConfig.schedule, "--schedule", help="cosine, linear or constant (after warm-up).")
SEED = typer.Option(LoopConfig.seed, "--seed", help="Seed for data order and initialisation.")
LOG_EVERY = typer.Option(LoopConfig.log_every, "--log-every", min=1, help="Log metrics every N steps (train-dpo runs its 3D probes, and every trainer its held-out evaluation, only at logged steps).")
SAVE_EVERY = typer.Option(LoopConfig.save_every, "--save-every", min=0, help="Write a resumable checkpoint every N steps (0: only the final model).")
RESUME = options.RESUME  # LoopConfig.resume: False
MAX_GRAD_NORM = typer.Option(LoopConfig.max_grad_norm, "--max-grad-norm", help="Clip the gradient norm (0: no clipping).")
PLOT = typer.Option(False, "--plot/--no-plot", help="Draw the run's curves to OUT/curves.png at the end.")

# LoRA (dpo3d.models.lora): the defaults are LoRAConfig's
_LORA = LoRAConfig()
LORA_R = typer.Option(_LORA.r, "--lora-r", min=0, help="LoRA rank: train low-rank adapters (peft) on a frozen base instead of every weight; OUT is then an adapter folder that every --model loads. 0: full fine-tuning.")
LORA_ALPHA = typer.Option(_LORA.alpha, "--lora-alpha", help="LoRA α: the adapter's update is scaled by α / r.")
LORA_DROPOUT = typer.Option(_LORA.dropout, "--lora-dropout", min=0.0, help="Dropout on the adapter's input (0 keeps runs exactly reproducible across processes and resumes).")
LORA_TARGETS = typer.Option(_LORA.targets, "--lora-targets", help="Layers that get adapters: all-linear (every linear layer but the LM head) or module names, comma-separated (q_proj,v_proj).")
MERGE = typer.Option(_LORA.merge, "--merge/--no-merge", help="With --lora-r: also write the adapter merged into its base as a full model, OUT/merged.")


def with_default(option: typer.models.OptionInfo, default: Any) -> typer.models.OptionInfo:
    """The same option (names, bounds, help) with another default: the study's, from StudyConfig."""
    changed = copy.copy(option)
    changed.default = default
    return changed


def lora_config(r: int, alpha: float, dropout: float, targets: str, merge: bool) -> LoRAConfig:
    config = LoRAConfig(r=r, alpha=alpha, dropout=dropout, targets=targets, merge=merge)
    config.validate()
    return config


MIXED_PRECISION = typer.Option(
    LoopConfig.mixed_precision, "--mixed-precision", show_default=False,
    help="no, bf16 or fp16 (GPUs): float32 master weights and optimizer state, the forward under autocast "
         "(fp16 with loss scaling). Default: accelerate launch's setting, else no. Use bf16 on GPUs.",
)
GRADIENT_CHECKPOINTING = typer.Option(
    LoopConfig.gradient_checkpointing, "--gradient-checkpointing/--no-gradient-checkpointing",
    help="Recompute activations in the backward pass instead of storing them: less memory, about a third more compute.",
)
KEEP_HOST_MEMORY = typer.Option(
    LoopConfig.keep_host_memory, "--keep-host-memory/--release-host-memory",
    help="On the CPU, keep the memory a step frees in the process for the next step instead of returning it to "
         "the kernel (glibc): each step's activations reuse their pages instead of faulting them in again (on the "
         "bundled model, 8 pairs a step: a handful of page faults a step instead of ~300,000, 1.10x faster). Costs "
         "peak memory (a fragmented heap: up to ~0.5 GiB more there, and under a 5 GiB cap it ran out at 16 pairs a "
         "step where released fit 64, when measured); the kept memory goes back when training ends.",
)
REPORT_TO = typer.Option(
    LoopConfig.report_to, "--report-to",
    help="Experiment trackers, comma-separated: tensorboard (OUT/logs), wandb, mlflow, trackio, comet_ml, aim, "
         "clearml, dvclive, swanlab; or none. OUT/metrics.jsonl is written either way.",
)


def loop_config(params: Mapping[str, Any], invocation: dict | None = None, **overrides: Any) -> LoopConfig:
    """The shared loop's config from a command's parsed options (``ctx.params``): every option named
    like a LoopConfig field fills it; ``--device`` becomes ``cpu``, a 0 ``--max-grad-norm`` no clipping."""
    names = {f.name for f in dataclasses.fields(LoopConfig)} - {"cpu", "extra", "invocation"}
    values = {name: params[name] for name in names if name in params}
    values["max_grad_norm"] = values.get("max_grad_norm") or None
    return LoopConfig(**values, cpu=on_cpu(params.get("device", "auto")), invocation=invocation, **overrides)


def on_cpu(device: str) -> bool:
    """``--device`` of a trainer (auto, cpu, cuda, cuda:N): whether it trains on the CPU."""
    return precision.training_device(device)


class LiveDisplay:
    """A progress bar with the latest metrics, 3D warnings printed above it."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys
        warnings.showwarning = self.show_warning  # the library's warnings (pure bf16 weights) as one readable line
        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.task = None

    def callbacks(self) -> LoopCallbacks:
        return LoopCallbacks(
            on_start=self.start, on_step=self.step, on_log=self.log, on_warning=self.warn,
            on_save=lambda step, path: self.progress.console.print(f"[dim]saved step {step} → {path}[/]"),
        )

    def start(self, start: int, total: int) -> None:
        self.task = self.progress.add_task("train", total=total, completed=start, metrics="")

    def step(self, step: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=step)

    def log(self, record: dict) -> None:
        shown = [f"{key.replace('probe_', '').replace('_logp_delta', ' Δ')}={record[key]:.3g}" for key in self.keys if isinstance(record.get(key), (int, float))]
        if self.task is not None:
            self.progress.update(self.task, metrics=" ".join(shown))

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.progress.console.print(f"[bold yellow]warning[/] {message}", highlight=False)

    def warn(self, message: str) -> None:
        acted = message.split(": ", 1)[-1].startswith("guard ")  # dpo3d.watch.guard's action messages
        self.progress.console.print(f"[bold cyan]guard[/] {message}" if acted else f"[bold yellow]3D warning[/] {message}")
