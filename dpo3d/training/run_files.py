"""What a run folder holds on disk, read and tidied without a run: whether a rerun finds it new, done,
resumable or to restart; the final model published atomically; the checkpoint's step; the metrics log cut
back to the checkpoint for a resume; and the debris a kill leaves behind."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from dpo3d.data.faults import Fault
from dpo3d.data.records import write_records
from dpo3d.data.run_log import read_log
from dpo3d.models.loading import save_options

from . import checkpoint
from .control import BEST


class RunLogMismatch(Fault):
    """``--resume``: metrics.jsonl no longer holds what was logged up to the checkpoint."""


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


#: a Hugging Face folder's weight files (a sharded model's too): what save_final publishes last
_WEIGHTS = re.compile(r"(model|adapter_model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?")
#: the files whose presence in OUT means its final model was published
FINAL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def _is_weights(name: str) -> bool:
    return _WEIGHTS.fullmatch(name) is not None


def save_final(model, tokenizer, out: Path, state_dict: dict | None = None, extra_models: dict | None = None) -> None:
    """The trained model's files into OUT itself, ``extra_models`` into OUT/<name>. Everything is written
    into a staging folder first, so a failure (a full disk) publishes nothing; then each file is moved in
    (the weights last: OUT's weights are new only once the rest is) and each extra folder swapped in.
    ``state_dict``: the weights gathered from a sharded model (``model`` then only gives the config and the
    file layout)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".final.", dir=out))
    try:
        model.save_pretrained(staging, **checkpoint.weights_option(state_dict), **save_options(model))
        tokenizer.save_pretrained(staging)
        for name, extra in (extra_models or {}).items():
            extra.save_pretrained(staging / name, **save_options(extra))
        for name in extra_models or {}:
            if (out / name).exists():
                os.replace(out / name, staging / f".{name}.old")
            os.replace(staging / name, out / name)
        for item in sorted((item for item in staging.iterdir() if item.is_file()), key=lambda item: _is_weights(item.name)):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def saved_step(out: Path) -> int | None:
    """The step of OUT's checkpoint (None: none, or its state file cannot be read)."""
    found = checkpoint.latest(out)
    if found is None:
        return None
    try:
        return int(torch.load(found / checkpoint.STATE_FILE, weights_only=True, mmap=True)["step"])
    except Exception:  # noqa: BLE001 - an unreadable state file counts as no step; loading it says why
        return None


def holds_final_model(out: Path) -> bool:
    """Whether OUT holds a final model's weights (a finished run's, or a stopped one's best)."""
    return any((Path(out) / name).is_file() for name in FINAL_WEIGHTS)


def _steps_text(steps: list[int]) -> str:
    if len(steps) == 1:
        return f"the record of step {steps[0]}"
    return f"the {len(steps)} records of steps {steps[0]} to {steps[-1]}"


def reconcile_metrics(path: Path, step: int, log_every: int, logs_step_zero: bool = True) -> str | None:
    """Make metrics.jsonl end at the checkpoint's ``step`` for a resume: records logged after it (the
    killed run got further) and a torn last line are dropped (the warning that says so is returned);
    a log that lost records up to ``step`` (emptied, deleted, cut short) or holds a step twice (two runs
    wrote it) is refused, since the resumed run's log would no longer match its steps."""
    path = Path(path)
    raw = path.read_bytes() if path.is_file() else None
    records = read_log(path) if raw is not None else []
    torn = raw is not None and len([line for line in raw.split(b"\n") if line.strip()]) > len(records)
    kept = [record for record in records if record.get("step", 0) <= step]
    later = [record.get("step") for record in records if record.get("step", 0) > step]
    steps = [record.get("step", 0) for record in kept]
    last_logged = step - step % log_every  # the loop logs every log_every steps (and step 0 where it does)
    checkpoint_text = f"the checkpoint in {path.parent / checkpoint.LATEST} is at step {step}"
    remedy = (f"put the run's own metrics.jsonl back, or delete {path.parent / checkpoint.LATEST} and rerun with "
              "--resume to train again from the start")
    if steps != sorted(set(steps)):
        raise RunLogMismatch(f"--resume: {path} holds steps out of order or twice (two runs wrote it?) up to step "
                             f"{step}, where {checkpoint_text}: {remedy}")
    lost = (logs_step_zero and (not steps or steps[0] != 0)) or (last_logged > 0 and (not steps or steps[-1] < last_logged))
    if lost:
        what = ("is missing" if raw is None else "is empty" if not records else
                f"holds steps {steps[0]} to {steps[-1]}" if steps else f"starts at step {records[0].get('step')}")
        raise RunLogMismatch(f"--resume: {path} {what}, but {checkpoint_text}: the metrics of the steps before it "
                             f"are lost; {remedy}")
    if not later and not torn:
        return None
    write_records(kept, path)
    dropped = " and ".join(part for part in (_steps_text(later) if later else "", "a torn last line" if torn else "") if part)
    return f"--resume: {path}: dropped {dropped} (logged after the checkpoint, step {step})"


def remove_debris(out: Path) -> list[Path]:
    """What a kill left in OUT (and OUT/best): a checkpoint's staging folder, the previous checkpoint of a
    swap that completed, the final save's staging folder, a best state's staged copy. A swap interrupted
    between its renames is put back first. Returns what was removed."""
    out = Path(out)
    if not out.is_dir():
        return []
    checkpoint.recover_interrupted_swap(out)
    found = [*out.glob(f".{checkpoint.LATEST}.*"), *out.glob(".final.*"), *out.glob(".*.best"),
             *(out / BEST).glob(".final.*")]
    for leftover in found:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return found
