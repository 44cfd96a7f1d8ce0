"""TR-DPO's reference dynamics: the reference model moves toward the policy during training.

Gorbatovski et al. 2024, "Learn Your Reference Model for Real Good Alignment" (TR-DPO): every τ
steps the reference becomes ``α·θ + (1−α)·θ_ref`` (soft) or the policy itself (hard, α = 1).

dpo3d reads the reference's log-probs from a cache computed before training (reference.py), so
a sync is two things here: the reference's weights updated, then every cached group (training
pairs, their unseen candidates, eval pairs, LD-DPO's shared lengths) scored again with them;
every step still reads cached log-probs, and each sync costs one forward pass over those groups.

The reference is kept as a full-weight model beside the policy (on the run's device), also in a
LoRA run: there the policy's *effective* weights ``W0 + ΔW`` are mixed in (see
:func:`dpo3d.models.lora.effective_weights`). A weighted set of adapters would hold the same
function, but it grows by one adapter per soft sync (or its rank grows, ``r`` per sync), and
each reference pass would run them all; one merged copy costs the base's memory once, whatever
the number of syncs, and scores as fast as the starting model did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dpo3d.data.sequences import EncodedPair
from dpo3d.models.lora import effective_weights
from dpo3d.scoring.forward import LogprobOptions

from . import reference as ref_cache

MODES = ("soft", "hard")
SYNC_HELP = ("Move the reference toward the policy during training (TR-DPO, Gorbatovski et al. 2024): soft mixes "
             "α·policy + (1−α)·reference, hard copies the policy, every --ref-sync-every steps; the cached "
             "reference log-probs are then scored again. Left out: the reference stays where it started.")
ALPHA_HELP = "Soft sync's α, the policy's share of the new reference (TR-DPO's and TRL's 0.6); hard sync is α = 1."
EVERY_HELP = ("Sync every τ steps. TRL's default 512 exceeds most dpo3d runs (tens to a few hundred steps), so "
              "32: a 100-step run syncs 3 times, each a forward pass over every pair (≈ a third of an epoch's cost).")


def validate(mode: str | None, alpha: float, every: int) -> None:
    """One-line errors for settings no sync can run with."""
    if mode is None:
        return
    if mode not in MODES:
        raise ValueError(f"--ref-sync must be soft or hard (got {mode!r}); leave it out to keep the reference fixed")
    if mode == "soft" and not 0 < alpha <= 1:
        raise ValueError(f"--ref-sync-alpha must lie in (0, 1] (got {alpha}): the policy's share of the new reference")
    if every < 1:
        raise ValueError(f"--ref-sync-every must be a positive number of steps (got {every})")


def settings(mode: str | None, alpha: float, every: int) -> dict | None:
    """What a run records of its sync (``run_config.json``'s ``ref_sync``): None for a fixed reference."""
    return None if mode is None else {"mode": mode, "alpha": alpha if mode == "soft" else 1.0, "every": every}


def describe(recorded: Mapping | None) -> str:
    if not recorded:
        return "a fixed reference"
    if recorded["mode"] == "hard":
        return f"--ref-sync hard (every {recorded['every']} steps)"
    return f"--ref-sync soft (α {recorded['alpha']:g}, every {recorded['every']} steps)"


def check_resume(run_config: Path, wanted: dict | None) -> None:
    """Refuse to resume a run with other sync settings than it started with: its checkpoint's reference
    (moved by the syncs so far, or never moved) would be read under rules it was not made by."""
    if not run_config.is_file():
        return
    extra = json.loads(run_config.read_text(encoding="utf-8")).get("extra") or {}
    started = extra.get("ref_sync")  # absent: a run from before reference sync, with a fixed reference
    if started != wanted:
        raise ValueError(f"{run_config.parent} started with {describe(started)}; this resume asks for "
                         f"{describe(wanted)}: resume with the run's own sync flags, or start a new --out")


def is_sync_step(step: int, every: int, total: int) -> bool:
    """Whether the reference syncs after optimizer step ``step``: every τ-th step, not the last one
    (nothing trains after it)."""
    return step % every == 0 and step < total


def syncs_up_to(step: int, every: int, total: int) -> int:
    """How many syncs happened up to and including step ``step``."""
    return min(step, total - 1) // every if total > 1 else 0


def mix_into(reference, weights: Mapping[str, torch.Tensor], alpha: float) -> None:
    """``reference``'s parameters ← ``alpha·weights + (1−alpha)·reference`` in place (α = 1: a copy),
    computed in float32 and stored in the reference's dtype."""
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            weight = weights[name].to(parameter.device)
            if alpha == 1:
                parameter.copy_(weight)
            else:
                parameter.copy_((alpha * weight.float() + (1 - alpha) * parameter.float()).to(parameter.dtype))


def check_same_weights(reference, policy, what: str) -> None:
    """Refuse a reference whose parameters the policy's do not match by name and shape."""
    theirs = {name: tuple(weight.shape) for name, weight in effective_weights(policy).items()}
    ours = {name: tuple(parameter.shape) for name, parameter in reference.named_parameters()}
    if ours != theirs:
        differ = sorted(set(ours.items()) ^ set(theirs.items()))[:2]
        raise ValueError(f"--ref-sync: {what} and --model do not share their weights' names and shapes "
                         f"({differ}); a sync mixes the policy's weights into the reference's")


@dataclass
class ReferenceSync:
    """The run's reference model, how it syncs, and the groups whose log-probs it keeps cached."""

    model: torch.nn.Module
    mode: str
    alpha: float
    every: int
    groups: Mapping[str, Sequence[EncodedPair]]
    pad_id: int
    batch_size: int
    options: LogprobOptions | None = None

    @classmethod
    def start(cls, model, mode: str, alpha: float, every: int, groups, pad_id: int, batch_size: int,
              options: LogprobOptions | None = None) -> ReferenceSync:
        """``model`` (a copy of the starting policy, or --ref loaded), frozen, as the run's moving reference."""
        model.requires_grad_(False)
        model.eval()
        return cls(model, mode, alpha if mode == "soft" else 1.0, every, groups, pad_id, batch_size, options)

    def update(self, policy) -> None:
        """The sync itself: the policy's effective weights mixed into (or copied over) the reference."""
        mix_into(self.model, effective_weights(policy), self.alpha)

    def scores(self) -> dict[str, torch.Tensor]:
        """Every group's summed log-probs under the reference as it is now (what reference.py caches)."""
        return ref_cache.compute(self.model, self.groups, self.pad_id, self.batch_size, options=self.options)

    def to_json(self) -> dict:
        return settings(self.mode, self.alpha, self.every)

    def steps(self, last: int, total: int) -> list[int]:
        """The steps a run that trained up to step ``last`` of ``total`` synced at."""
        return [step for step in range(self.every, last + 1, self.every) if is_sync_step(step, self.every, total)]
