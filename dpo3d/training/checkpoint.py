"""Resumable checkpoints, written atomically.

``OUT/checkpoint/`` holds the latest resumable state: the model as a Hugging
Face folder (safetensors; a LoRA run's adapter folder) plus ``trainer_state.pt``
(optimizer, scheduler, RNG, step), a tensors-only file loaded with
``weights_only=True`` (no pickled objects). A new checkpoint is staged in a
temporary folder and swapped in with renames, so a run killed at any instant
leaves the previous one intact. Under FSDP the weights are gathered first (every
process) and the optimizer state is the full one keyed by parameter name; the
format is the same (see sharding.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from dpo3d.models.loading import is_adapted, save_options
from dpo3d.models.lora import load_adapter_weights

STATE_FILE = "trainer_state.pt"
LATEST = "checkpoint"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's file: a LoRA run's checkpoint holds only its adapter


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
    try:
        model.save_pretrained(staging, **weights_option(state_dict), **save_options(model))
        tokenizer.save_pretrained(staging)
        for name, extra in (extra_models or {}).items():
            extra.save_pretrained(staging / name, **save_options(extra))
        torch.save(
            {"step": state.step, "optimizer": state.optimizer, "scheduler": state.scheduler, "torch_rng": state.torch_rng},
            staging / STATE_FILE,
        )
        target = out / LATEST
        previous = out / f".{LATEST}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            os.replace(target, previous)
        os.replace(staging, target)
        shutil.rmtree(previous, ignore_errors=True)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def recover_interrupted_swap(out: Path) -> None:
    """A kill between the two renames of save() leaves only the previous checkpoint: put it back."""
    out = Path(out)
    previous = out / f".{LATEST}.previous"
    if previous.exists() and not (out / LATEST).exists():
        os.replace(previous, out / LATEST)


def load(folder: Path, model, extra_models: dict | None = None) -> TrainerState:
    """Load weights into ``model`` (and each of ``extra_models`` from its sub-folder), in place,
    and return the trainer state."""
    for name, extra in (extra_models or {}).items():
        if not (Path(folder) / name).is_dir():
            raise ValueError(f"{folder}: holds no {name}/ to resume (the run started without it: resume with "
                             "the run's own flags)")
        _load_weights(Path(folder) / name, extra)
    _load_weights(Path(folder), model)
    raw = torch.load(Path(folder) / STATE_FILE, weights_only=True)
    return TrainerState(raw["step"], raw["optimizer"], raw["scheduler"], raw["torch_rng"])


def _load_weights(folder: Path, model) -> None:
    adapter = Path(folder) / ADAPTER_WEIGHTS
    if adapter.is_file():  # a LoRA run checkpoints its adapter alone
        load_adapter_weights(model, adapter)
        return
    if is_adapted(model):
        raise ValueError(f"{folder}: holds a full model, but this run trains a LoRA adapter (resume without --lora-r)")
    weights = load_file(str(Path(folder) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # tied embeddings are saved once; anything else missing is a real mismatch
    tied = {k for k in missing if "lm_head" in k} if getattr(model.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{folder}: checkpoint does not fit the model (missing {sorted(missing)[:3]}, unexpected {unexpected[:3]})")
