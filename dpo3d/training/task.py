"""What a trainer computes, as the loop sees it: the one interface every task implements.

A task gives the token length of each example and the loss of a micro-batch; everything else has
a default, so the loop asks every task the same questions and never probes for methods:

- ``probe``: measurements at a logged step (the 3D probes, a held-out evaluation); default none;
- ``check``: warnings a logged record raises (the live detector, a guard), on the main process;
- ``control`` / ``apply_control``: what that check decided (stop, save the best state, a loss
  change) and its application on the other processes;
- ``resume``: replay a resumed run's logged records (the detector and guard end as they were);
- ``after_update``: what changes with the weights after an optimizer step (TR-DPO's reference
  sync), on every process; ``extra_models``: models a checkpoint holds beside the trained one (that
  moving reference), loaded back on resume before ``restore`` rebuilds what derives from them;
- ``total_steps``: set by the loop before training, so a task evaluates the last step too;
- ``logprob_options``: how the task scores tokens (the loop settles the scorer's paths on every
  process first); None for a task that scores none (reward models);
- ``probe_gradients``: whether the probes differentiate with respect to the parameters (DPO's
  gradient split), which sharded parameters do not allow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from dpo3d.scoring.forward import LogprobOptions

from .control import StepControl


class Task(ABC):
    total_steps: int = 0
    logprob_options: LogprobOptions | None = None
    probe_gradients: bool = False

    @abstractmethod
    def lengths(self) -> list[int]:
        """Token length of each example (for length-grouped batches)."""

    @abstractmethod
    def loss(self, model, indices: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean loss over ``indices`` and per-example metric tensors (shape ``(len(indices),)``)."""

    def probe(self, model, step: int, indices: list[int]) -> dict[str, float]:
        """Extra measurements at a logged step (``indices``: the main process's last micro-batch); on the main
        process, or under sharded parameters on every process with the same result (only the main one logs it)."""
        return {}

    def check(self, record: dict) -> list[str]:
        """Warnings raised by a logged record, on the main process."""
        return []

    def control(self) -> StepControl:
        """What the last ``check`` decided, for the loop to send to every process."""
        return StepControl()

    def apply_control(self, state: dict) -> None:  # noqa: B027  (a task with no state to share does nothing)
        """Apply the main process's decision (``StepControl.state``) on another process."""

    def resume(self, records: list[dict], saved_best_step: int | None) -> list[str]:
        """Replay the logged records of a resumed run; the warnings that raises."""
        return []

    def after_update(self, model, step: int) -> bool:
        """After optimizer step ``step``, on every process, under the run's autocast (``model``: the
        unwrapped policy): update what follows the weights; whether anything changed (the loop then
        reports the time it took as a stage)."""
        return False

    def extra_models(self) -> dict:
        """Models besides the trained one that a checkpoint saves and a resume loads back, by sub-folder."""
        return {}

    def restore(self, step: int) -> None:  # noqa: B027  (a task whose state is all in the weights does nothing)
        """On resume from step ``step``, on every process, after ``extra_models`` are loaded back:
        rebuild what derives from them."""
