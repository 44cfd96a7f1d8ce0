"""The toy's probes fed to train-dpo's live 3D detector, and the guard acting on its warnings.

Each step, every run gets one probe record in train-dpo's fields, changes since
step 0 (the reference) in nats: ``probe_chosen_logp_delta`` (mean over pairs of
log x1 − its reference value), ``probe_rejected_logp_delta`` (the same for x2) and
``probe_unseen_logp_delta`` (mean over prompts of log π(9|x) and log π(10|x)) and
``probe_greedy_logp_delta`` (mean over prompts of the log-prob of the reference's most
likely response: train-dpo's greedy probe, where the squeezing effect would show).
The same ``ThreeDDetector`` reads it; a ``Guard`` (--guard) turns its warnings into
a change of the run's loss or a stop, and a ``BestTracker`` (--keep-best, implied
by --guard stop) remembers the step where the probe chosen log-prob peaked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..guard import BestTracker, Guard, GuardSettings, watch
from ..losses import get_loss
from ..training.detector import CHOSEN, GREEDY, REJECTED, UNSEEN, ThreeDDetector


@dataclass
class RunWatch:
    """One toy run's detector, guard (None without --guard) and best-step tracker (None without keep-best)."""

    loss: str
    hyperparameters: Mapping[str, float]
    guard: Guard | None = None
    best: BestTracker | None = None
    detector: ThreeDDetector = field(default_factory=ThreeDDetector)
    stopped_at: int | None = None  # the step the guard stopped the run at

    @classmethod
    def start(
        cls, loss: str, hyperparameters: Mapping[str, float], guard: str | None, keep_best: str | None, settings: GuardSettings
    ) -> RunWatch:
        made = Guard.for_loss(guard, loss, hyperparameters, settings) if guard is not None else None
        keep = keep_best or ("chosen" if guard == "stop" else None)  # a stop keeps the state where the chosen peaked
        best = None
        if keep is not None:  # the guard tracks the probe chosen log-prob already; without one, a tracker of its own
            best = made.best if made is not None else BestTracker.for_metric(keep)
        return cls(loss, hyperparameters, made, best)

    @property
    def current_loss(self) -> tuple[str, dict[str, float]]:
        """The loss this run trains with now, and the hyper-parameters it takes."""
        if self.guard is None:
            return self.loss, dict(self.hyperparameters)
        name = self.guard.loss_name
        return name, get_loss(name).select(self.guard.hyperparameters)

    def observe(self, step: int, chosen: float, rejected: float, unseen: float, greedy: float) -> bool:
        """Read one step's probes; True when the guard changed the loss or stopped the run."""
        record = {"step": step, CHOSEN: chosen, REJECTED: rejected, UNSEEN: unseen, GREEDY: greedy}
        _, actions = watch(self.detector, self.guard, record)
        if self.guard is None and self.best is not None:
            self.best.update(record)
        if self.guard is not None and self.guard.should_stop and self.stopped_at is None:
            self.stopped_at = step
        return bool(actions)

    @property
    def events(self) -> list[dict]:
        return list(self.detector.events)

    @property
    def actions(self) -> list[dict]:
        return [action.record() for action in self.guard.actions] if self.guard is not None else []

    @property
    def kept_step(self) -> int | None:
        return self.best.step if self.best is not None else None
