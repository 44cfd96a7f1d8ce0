"""Options of the training commands (sft, train-dpo, train-rm, ppo, study): the loop's and LoRA's derived
from their config dataclasses (LoopConfig, LoRAConfig), the few that are the trainers' own, and the live
display. The options every command shares (--model, --dtype, --device, --limit, ...) are cli/options.py's."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from dpo3d.data import run_lock
from dpo3d.models.lora import LoRAConfig
from dpo3d.training import precision, sharding
from dpo3d.training.config import LoopConfig, is_main_process
from dpo3d.training.run_folder import LoopCallbacks, NonFiniteLoss

from . import options
from .common import console, fail
from .config_options import OptionGroup

OUT = typer.Option(
    ..., "--out", "-o", help="Run folder: the final Hugging Face model, run_config.json, metrics.jsonl, checkpoint/.",
    callback=options.output("folder"),
)
PLOT = typer.Option(False, "--plot/--no-plot", help="Draw the run's curves to OUT/curves.png at the end.")

#: the shared loop's options (LoopConfig's fields; --out and --device are the commands' own)
LOOP = OptionGroup(LoopConfig)
#: LoRA's options (LoRAConfig's fields as --lora-r, --lora-alpha, ..., --merge)
LORA = OptionGroup(LoRAConfig, prefix="lora_")


def lora_config(params: Mapping[str, Any]) -> LoRAConfig:
    config = LORA.build(params)
    config.validate()
    return config


def loop_config(params: Mapping[str, Any], invocation: dict | None = None, group: OptionGroup = LOOP,
                **overrides: Any) -> LoopConfig:
    """The shared loop's config from a command's parsed options (``ctx.params``): every LoopConfig
    option it offers (``group``'s); ``--device`` becomes ``cpu``."""
    values = {**group.values(params), **overrides}
    cpu = precision.training_device(params.get("device", "auto"))
    sharding.check_devices(cpu)  # a launch this machine cannot run, refused before anything is loaded or written
    config = LoopConfig(out=params["out"], **values, cpu=cpu, invocation=invocation)
    if is_main_process():  # another live run on --out: refused before the model loads (the run locks it later)
        run_lock.check_free(config.out)
    return config


@contextlib.contextmanager
def running(display: LiveDisplay, rerun_to_continue: Path | None = None) -> Iterator[None]:
    """A run under its live display: a non-finite loss is one line and exit 1; with ``rerun_to_continue``
    (a study's or an iterate run's folder), Ctrl-C says that rerunning the command continues it (exit 130)."""
    try:
        with display.progress:
            yield
    except NonFiniteLoss as err:
        fail(str(err), code=1)
    except KeyboardInterrupt:
        if rerun_to_continue is None:
            raise
        console.print(f"interrupted: rerun the same command to continue in {rerun_to_continue}", highlight=False)
        raise typer.Exit(130) from None


class LiveDisplay:
    """On a terminal, a progress bar with the latest metrics; into a file (a batch job's log), one line per
    logged step. Either way: 3D warnings, saves, a resume and each stage's time as lines of their own."""

    def __init__(self, keys: tuple[str, ...], to: Console = console):
        self.keys = keys
        self.total: int | None = None
        warnings.showwarning = self.show_warning  # the library's warnings (pure bf16 weights) as one readable line
        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=to,
            disable=not to.is_terminal,  # a bar in a file is one cut line at the end: the steps are lines there
        )
        self.task = None

    def say(self, text: str, style: str = "") -> None:
        """``text`` as written (no markup read in it), in ``style``."""
        self.progress.console.print(Text(text, style=style), highlight=False)

    def callbacks(self) -> LoopCallbacks:
        return LoopCallbacks(
            on_start=self.start, on_step=self.step, on_log=self.log, on_warning=self.warn,
            on_save=lambda step, path: self.say(f"saved step {step} → {path}", "dim"),
            on_stage=lambda name, seconds: self.say(f"{name} took {seconds:.1f} s", "dim"),
        )

    def next_run(self) -> LoopCallbacks:
        """The callbacks of the next of several runs (a study's cells, iterate's rounds): one bar at a time,
        the last run's goes."""
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        return self.callbacks()

    def start(self, start: int, total: int) -> None:
        self.total = total
        if start:
            self.say(f"resumed from step {start} of {total}")
        self.task = self.progress.add_task("train", total=total, completed=start, metrics="")

    def step(self, step: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=step)

    def log(self, record: dict) -> None:
        shown = [f"{key.replace('probe_', '').replace('_logp_delta', ' Δ')}={record[key]:.3g}" for key in self.keys if isinstance(record.get(key), (int, float))]
        if self.task is not None:
            self.progress.update(self.task, metrics=" ".join(shown))
        if self.progress.disable:
            lr = [f"lr={record['lr']:.3g}"] if isinstance(record.get("lr"), (int, float)) else []
            self.say(" ".join([f"step {record.get('step')}/{self.total}", *shown, *lr]))

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self.progress.console.print(Text.assemble(("warning", "bold yellow"), " ", str(message)), highlight=False)

    def warn(self, message: str) -> None:
        acted = message.split(": ", 1)[-1].startswith("guard ")  # dpo3d.watch.guard's action messages
        label = ("guard", "bold cyan") if acted else ("3D warning", "bold yellow")
        self.progress.console.print(Text.assemble(label, " ", message), highlight=False)
