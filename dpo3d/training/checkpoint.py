"""Resumable checkpoints, written atomically.

``OUT/checkpoint/`` holds the latest resumable state: the model as a Hugging
Face folder (safetensors; a LoRA run's adapter folder) plus ``trainer_state.pt``
(optimizer, scheduler, RNG, step), a tensors-only file loaded with
``weights_only=True`` (no pickled objects). A new checkpoint is staged in a
temporary folder and swapped in with renames, so a run killed at any instant
leaves the previous one intact. Under FSDP the weights are gathered first (every
process) and the optimizer state is the full one keyed by parameter name; the
format is the same (see sharding.py).

Each checkpoint carries ``checksums.json``: the size and sha256 of every file in
it, written last, before the swap. Loading checks it first, so a truncated,
emptied or garbled file is a CorruptFile naming the file and the remedy, never
weights trained on or a loss blamed on the learning rate. (safetensors checks
only its header and the file's length, and torch's zip container is not checked
on load, so garbled tensor bytes pass both: only a digest of the bytes finds
them. sha256 runs at about 1.7 GB/s on one core, well under a second for a
135M-parameter checkpoint.) A checkpoint without the manifest (saved by an
earlier version) still loads; what its files show (a short file, a refused
header, NaN or inf in the weights, an unreadable trainer state) is still caught.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from dpo3d.data.faults import CorruptFile, Fault
from dpo3d.models.integrity import file_sha256, first_line, read_weights
from dpo3d.models.loading import ADAPTER_WEIGHTS, is_adapted, save_options
from dpo3d.models.lora import load_adapter_weights

STATE_FILE = "trainer_state.pt"
LATEST = "checkpoint"
MANIFEST = "checksums.json"
_STATE_KEYS = ("step", "optimizer", "scheduler", "torch_rng")


@dataclass
class TrainerState:
    step: int
    optimizer: dict
    scheduler: dict
    torch_rng: torch.Tensor


def latest(out: Path) -> Path | None:
    folder = Path(out) / LATEST
    return folder if (folder / STATE_FILE).is_file() else None


def weights_option(state_dict: dict | None) -> dict:
    """``save_pretrained`` keywords for weights gathered from a sharded model (none: the model's own)."""
    return {} if state_dict is None else {"state_dict": state_dict}


def save(out: Path, model, tokenizer, state: TrainerState, extra_models: dict | None = None,
         state_dict: dict | None = None) -> Path:
    """Write ``OUT/checkpoint`` atomically (stage, then swap); ``extra_models`` go into named sub-folders
    (PPO's value model); ``state_dict``: ``model``'s weights gathered from its shards."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=out))
    target = out / LATEST
    try:
        with writing(target):
            model.save_pretrained(staging, **weights_option(state_dict), **save_options(model))
            tokenizer.save_pretrained(staging)
            for name, extra in (extra_models or {}).items():
                extra.save_pretrained(staging / name, **save_options(extra))
            torch.save(
                {"step": state.step, "optimizer": state.optimizer, "scheduler": state.scheduler,
                 "torch_rng": state.torch_rng},
                staging / STATE_FILE,
            )
            write_manifest(staging)
        previous = out / f".{LATEST}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            os.replace(target, previous)
        os.replace(staging, target)
        shutil.rmtree(previous, ignore_errors=True)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def writing(target: Path) -> Iterator[None]:
    """Name the writers' own errors for what they are: safetensors reports a full disk as a SafetensorError
    (``os error 28``) and torch.save as a RuntimeError from its zip writer, neither an OSError. A failure
    with an OS error code becomes that OSError on ``target``; any other failure of those writers a Fault
    that names ``target`` (the folder is staged, so what was there before is untouched)."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, RuntimeError) as err:
        text = first_line(err)
        code = re.search(r"os error (\d+)", text)
        if code is not None:
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(target)) from err
        if isinstance(err, SafetensorError) or "inline_container" in text or "PytorchStreamWriter" in text:
            raise Fault(f"{target}: could not be written ({text}); check that its disk has space, then rerun "
                        "(what was there before is untouched)") from err
        raise


def recover_interrupted_swap(out: Path) -> None:
    """A kill between the two renames of save() leaves only the previous checkpoint: put it back."""
    out = Path(out)
    previous = out / f".{LATEST}.previous"
    if previous.exists() and not (out / LATEST).exists():
        os.replace(previous, out / LATEST)


def write_manifest(folder: Path) -> None:
    """``checksums.json``: the size and sha256 of every file under ``folder`` (sub-folders included)."""
    folder = Path(folder)
    files = {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1) + "\n")


def remedy(folder: Path) -> str:
    """What to do about a damaged checkpoint (``OUT/checkpoint``)."""
    folder = Path(folder)
    return (f"the checkpoint cannot be resumed: restore {folder} from a copy, or start the run again with "
            f"another --out (or after deleting {folder.parent})")


def verify(folder: Path) -> None:
    """Check every file the manifest lists: present, of its size (cheap, first), of its sha256. A folder
    without a manifest (an earlier version's checkpoint) passes: its files are checked as they load."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        entries = [(folder / name, int(entry["size"]), str(entry["sha256"])) for name, entry in listed.items()]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CorruptFile(manifest, "the checkpoint's checksum manifest", first_line(err), remedy(folder)) from None
    for path, size, _ in entries:
        if not path.is_file():
            raise CorruptFile(path, "a checkpoint file", "missing", remedy(folder))
        found = path.stat().st_size
        if found != size:
            raise CorruptFile(path, "a checkpoint file", f"{found} bytes where {size} were saved: truncated or "
                              "overwritten", remedy(folder))
    for path, _, digest in entries:
        if file_sha256(path) != digest:
            raise CorruptFile(path, "a checkpoint file", "its bytes differ from the checksum saved with it: "
                              "garbled", remedy(folder))


def load(folder: Path, model, extra_models: dict | None = None) -> TrainerState:
    """Check the files against the manifest, load weights into ``model`` (and each of ``extra_models``
    from its sub-folder), in place, and return the trainer state."""
    folder = Path(folder)
    verify(folder)
    for name, extra in (extra_models or {}).items():
        if not (folder / name).is_dir():
            raise ValueError(f"{folder}: holds no {name}/ to resume (the run started without it: resume with "
                             "the run's own flags)")
        _load_weights(folder / name, extra, remedy(folder))
    _load_weights(folder, model, remedy(folder))
    return _read_state(folder / STATE_FILE, remedy(folder))


def _read_state(path: Path, advice: str) -> TrainerState:
    what = "the checkpoint's trainer state"
    try:
        raw = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise CorruptFile(path, what, "missing", advice) from None
    except Exception as err:  # noqa: BLE001 - any failure to unpickle tensors-only data means damaged bytes
        raise CorruptFile(path, what, first_line(err), advice) from None
    if not isinstance(raw, dict) or any(key not in raw for key in _STATE_KEYS):
        raise CorruptFile(path, what, f"it lacks {', '.join(_STATE_KEYS)}", advice)
    return TrainerState(raw["step"], raw["optimizer"], raw["scheduler"], raw["torch_rng"])


def _load_weights(folder: Path, model, advice: str) -> None:
    adapter = Path(folder) / ADAPTER_WEIGHTS
    if adapter.is_file():  # a LoRA run checkpoints its adapter alone (peft's file)
        read_weights(adapter, "the checkpoint's adapter weight file", advice)
        load_adapter_weights(model, adapter)
        return
    if is_adapted(model):
        raise ValueError(f"{folder}: holds a full model, but this run trains a LoRA adapter (resume without --lora-r)")
    weights = read_weights(Path(folder) / "model.safetensors", "the checkpoint's weight file", advice)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # tied embeddings are saved once; anything else missing is a real mismatch
    tied = {k for k in missing if "lm_head" in k} if getattr(model.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{folder}: checkpoint does not fit the model (missing {sorted(missing)[:3]}, unexpected {unexpected[:3]})")
