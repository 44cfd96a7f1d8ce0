"""What a task decides at a logged step, shared by every process: stop, save the best state, a loss change.

Only the main process runs a task's ``check`` (the live 3D detector and a guard). Its
``StepControl`` goes to every process (``share_control``), since under data parallelism
or sharding all of them must train with the same loss, stop at the same step and take
part in gathering the weights of the best step (``save_best``: OUT/best).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import broadcast_object_list

from dpo3d.data.records import write_json

from . import sharding

#: where the loop keeps the state a task's ``StepControl.save_best`` marked (--keep-best, --guard stop)
BEST = "best"


@dataclass
class StepControl:
    """What a task's check decided at a logged step; the main process sends it to every process."""

    stop: bool = False  # end the run after this step
    save_best: bool = False  # this step is the best so far: save the model into OUT/best
    state: dict = field(default_factory=dict)  # the task's state the other processes apply (a guard's loss change)


def share_control(accelerator, task) -> StepControl:
    """The main process's ``task.control()`` on every process (applied to the task there)."""
    control = task.control() if accelerator.is_main_process else None
    if accelerator.num_processes > 1:
        control = broadcast_object_list([control], from_process=0)[0]
        if not accelerator.is_main_process:
            task.apply_control(control.state)
    return control


def saved_best_step(out: Path) -> int | None:
    found = out / BEST / "best.json"
    return int(json.loads(found.read_text())["step"]) if found.exists() else None


def save_best(accelerator, model, unwrapped, tokenizer, out: Path, step: int, save_model) -> None:
    """The model of ``step`` into OUT/best through ``save_model`` (the loop's ``save_final``), gathered
    first when sharded: every process takes part."""
    weights = sharding.full_state_dict(accelerator, model)
    if accelerator.is_main_process:
        folder = out / BEST
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "best.json").unlink(missing_ok=True)  # no stale step beside half-replaced weights
        save_model(unwrapped, tokenizer, folder, weights)
        write_json({"step": step}, folder / "best.json")
    accelerator.wait_for_everyone()


def keep_best_as_final(out: Path) -> None:
    """OUT's model files replaced by OUT/best's (each atomically)."""
    for item in (out / BEST).iterdir():
        if item.is_file() and item.name != "best.json":
            staged = out / f".{item.name}.best"
            shutil.copy2(item, staged)
            os.replace(staged, out / item.name)
