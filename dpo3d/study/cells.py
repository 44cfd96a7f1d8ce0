"""The training runs of a study: one ordinary run folder per (scenario, loss) cell, and Fig. 4's reward model.

A cell is :func:`dpo3d.training.dpo.train_dpo` on its scenario's pairs, with the live 3D
probes and the held-out pairs; every cell gets the same start, steps, batch, learning
rate and seed. A rerun skips a finished cell (its ``summary.json`` is there), resumes an
interrupted one from its checkpoint, and starts again one killed before its first checkpoint.
Each cell folder records the fingerprint of the pairs it was trained on, so a folder
trained on other pairs is never taken for a finished cell.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

from dpo3d.data import records as rec
from dpo3d.models.loading import LoadOptions

from ..training.config import LoopConfig
from ..training.dpo import DPORunConfig, train_dpo
from ..training.rm import RMRunConfig, train_rm
from ..training.run_files import folder_state
from .config import Layout, StudyConfig, cell_label, fingerprint
from .progress import StudyEvents, is_main, sync

CELL_FILE = "study_cell.json"


def pairs_fingerprint(layout: Layout, scenario: int) -> str:
    """What a cell was trained on: its scenario's training and held-out pairs files."""
    return fingerprint([hashlib.sha256(layout.pairs(scenario, split).read_bytes()).hexdigest()
                        for split in ("train", "heldout")])


def state(folder: Path, pairs_key: str) -> str:
    """``done``, ``resume`` (a checkpoint to continue from), ``restart`` (killed before its first
    checkpoint: nothing to keep) or ``new``."""
    folder = Path(folder)
    if not folder.exists():
        return "new"
    marker = folder / CELL_FILE
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("pairs") != pairs_key:
        raise ValueError(
            f"{folder} was trained on other pairs (the scenarios or prompts changed): remove it, or choose another --out"
        )
    return folder_state(folder)


def loop_config(config: StudyConfig, out: Path, resume: bool, lr: float | None = None) -> LoopConfig:
    """A cell's loop: the study's loop section (every trainer option its command took) in the cell's folder."""
    return replace(config.loop, out=out, resume=resume, lr=lr or config.loop.lr, extra={}, invocation=None)


def plan(folder: Path, pairs_key: str, what: str, events: StudyEvents, cpu: bool = False) -> str | None:
    """What to do with a run folder: None (it is done), ``resume`` or ``new``.

    The first process decides (and clears a run killed before its first checkpoint) and writes the
    decision into the folder; every process of an ``accelerate launch`` then reads the same one.
    """
    folder = Path(folder)
    if is_main():
        found = state(folder, pairs_key)
        if found == "restart":
            events.on_status(f"{what}: killed before its first checkpoint; starting it again")
            shutil.rmtree(folder)
        decided = {"done": "done", "resume": "resume"}.get(found, "new")
        folder.mkdir(parents=True, exist_ok=True)
        rec.write_json({"pairs": pairs_key, "plan": decided}, folder / CELL_FILE)
        if decided == "done":
            events.on_skip(what, f"done ({folder})")
        elif decided == "resume":
            events.on_status(f"{what}: resuming from its last checkpoint")
    sync(cpu)
    decided = json.loads((folder / CELL_FILE).read_text(encoding="utf-8"))["plan"]
    return None if decided == "done" else decided


def train_cell(config: StudyConfig, layout: Layout, scenario: int, loss: str, events: StudyEvents) -> bool:
    """Train one cell unless it is done; True when it trained (all of it, or the rest of it)."""
    folder = layout.cell(scenario, loss)
    label = cell_label(scenario, loss)
    decided = plan(folder, pairs_fingerprint(layout, scenario), label, events, config.loop.cpu)
    if decided is None:
        return False
    resume = decided == "resume"
    run = DPORunConfig(
        model=config.model, pairs=str(layout.pairs(scenario, "train")), loop=loop_config(config, folder, resume),
        loss=config.bound_loss(loss), eval_pairs=str(layout.pairs(scenario, "heldout")),
        max_length=config.max_length, probe_size=config.probe_size, unseen_limit=config.unseen_limit,
        eval_every=config.eval_every, load=LoadOptions(dtype=config.load.dtype, trust_remote_code=config.load.trust_remote_code),
        lora=config.lora, probe_responses=config.probe_responses,
    )
    train_dpo(run, events.training(label), lambda message: events.on_status(f"{label}: {message}"))
    return True


def train_reward_model(config: StudyConfig, layout: Layout, events: StudyEvents) -> bool:
    """Fig. 4's reward model on scenario 1's pairs (the same training and held-out pairs as cell s1-dpo)."""
    folder = layout.rm
    decided = plan(folder, pairs_fingerprint(layout, 1), "s1-rm", events, config.loop.cpu)
    if decided is None:
        return False
    resume = decided == "resume"
    run = RMRunConfig(
        model=config.model, pairs=str(layout.pairs(1, "train")), loop=loop_config(config, folder, resume, config.rm_lr),
        eval_pairs=str(layout.pairs(1, "heldout")), eval_every=config.eval_every, max_length=config.max_length,
        load=LoadOptions(dtype=config.load.dtype, trust_remote_code=config.load.trust_remote_code), lora=config.lora,
    )
    train_rm(run, events.training("s1-rm"), lambda message: events.on_status(f"s1-rm: {message}"))
    return True
