"""Options of the training commands (sft, train-dpo, train-rm), declared once, and the live display."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dpo3d.training.config import LoopConfig
from dpo3d.training.loop import LoopCallbacks

from .common import console

OUT = typer.Option(..., "--out", "-o", help="Run folder: the final Hugging Face model, run_config.json, metrics.jsonl, checkpoint/.")
LR = typer.Option(1e-6, "--lr", help="Peak learning rate (AdamW).")
BATCH_SIZE = typer.Option(8, "--batch-size", "-b", min=1, help="Examples per device per micro-batch.")
GRAD_ACCUM = typer.Option(2, "--grad-accum", min=1, help="Micro-batches per optimizer step (global batch = batch × processes × this).")
EPOCHS = typer.Option(1.0, "--epochs", help="Passes over the data (fractions allowed).")
MAX_STEPS = typer.Option(None, "--max-steps", help="Optimizer steps; overrides --epochs.")
WARMUP = typer.Option(0.1, "--warmup-ratio", help="Share of the steps spent warming the learning rate up.")
SCHEDULE = typer.Option("cosine", "--schedule", help="cosine, linear or constant (after warm-up).")
SEED = typer.Option(0, "--seed", help="Seed for data order and initialisation.")
LOG_EVERY = typer.Option(1, "--log-every", min=1, help="Log metrics every N steps (train-dpo runs its 3D probes, and every trainer its held-out evaluation, only at logged steps).")
SAVE_EVERY = typer.Option(0, "--save-every", min=0, help="Write a resumable checkpoint every N steps (0: only the final model).")
RESUME = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.")
MAX_GRAD_NORM = typer.Option(1.0, "--max-grad-norm", help="Clip the gradient norm (0: no clipping).")
DEVICE = typer.Option("auto", "--device", help="auto (accelerate's choice: each process's GPU, else the CPU) or cpu.")
PLOT = typer.Option(False, "--plot", help="Draw the run's curves to OUT/curves.png at the end.")


def loop_config(out: Path, lr: float, batch_size: int, grad_accum: int, epochs: float, max_steps: int | None,
                warmup_ratio: float, schedule: str, seed: int, log_every: int, save_every: int, resume: bool,
                max_grad_norm: float, device: str) -> LoopConfig:
    return LoopConfig(
        out=out, lr=lr, batch_size=batch_size, grad_accum=grad_accum, epochs=epochs, max_steps=max_steps,
        warmup_ratio=warmup_ratio, schedule=schedule, seed=seed, log_every=log_every, save_every=save_every,
        resume=resume, max_grad_norm=max_grad_norm or None, cpu=on_cpu(device),
    )


def on_cpu(device: str) -> bool:
    """``--device`` of a trainer: ``auto`` lets accelerate place each process, ``cpu`` forces the CPU."""
    if device not in ("auto", "cpu"):
        raise ValueError(f"--device {device}: a trainer takes auto or cpu (pick GPUs with CUDA_VISIBLE_DEVICES or accelerate launch)")
    return device == "cpu"


class LiveDisplay:
    """A progress bar with the latest metrics, 3D warnings printed above it."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys
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

    def warn(self, message: str) -> None:
        self.progress.console.print(f"[bold yellow]3D warning[/] {message}")
