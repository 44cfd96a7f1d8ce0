"""One run's live 3D detector, its guard and its best-step tracker, as training loops use them.

``RunWatch.start`` builds them from a run's options (``--guard``, ``--keep-best``);
``read(record)`` feeds one logged probe record to the detector, then the guard,
then the tracker. The toy (``dpo3d.toy.watch``) and train-dpo (``DPOTask``) share it.

For loops with several processes, only the main one reads records; ``state()`` is
what the others need to train with the same loss (the guard's loss name and
options, whether it stopped) and ``apply(state)`` binds it there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..losses.bound import BoundLoss, bind_loss
from .detector import DetectorSettings, ThreeDDetector
from .guard import BestTracker, Guard, GuardAction, GuardSettings, watch


@dataclass
class RunWatch:
    """A run's detector, guard (None without one) and best-step tracker (None without keep-best)."""

    loss: BoundLoss
    guard: Guard | None = None
    best: BestTracker | None = None
    detector: ThreeDDetector = field(default_factory=ThreeDDetector)
    stopped_at: int | None = None  # the step the guard stopped the run at

    @classmethod
    def start(
        cls,
        loss: BoundLoss,
        guard: str | None,
        keep_best: str | None,
        settings: GuardSettings | None = None,
        detector: DetectorSettings | None = None,
    ) -> RunWatch:
        made = Guard.for_loss(guard, loss, settings) if guard is not None else None
        keep = keep_best or ("chosen" if guard == "stop" else None)  # a stop keeps the state where the chosen peaked
        best = None
        if keep is not None:  # the guard tracks the probe chosen log-prob already; without one, a tracker of its own
            best = made.best if made is not None else BestTracker.for_metric(keep)
        return cls(loss, made, best, ThreeDDetector(detector or DetectorSettings()))

    @property
    def current_loss(self) -> BoundLoss:
        """The bound loss this run trains with now: its own, or the one the guard changed it to."""
        return self.loss if self.guard is None else self.guard.loss

    def read(self, record: Mapping) -> tuple[list[str], list[GuardAction], bool]:
        """One logged record: (the detector's warnings, the guard's actions, whether it is the new best)."""
        seen_best = self.best.step if self.best is not None else None
        warnings, actions = watch(self.detector, self.guard, dict(record))
        if self.guard is None and self.best is not None:
            self.best.update(record)
        if self.guard is not None and self.guard.should_stop and self.stopped_at is None:
            self.stopped_at = int(record["step"])
        is_best = self.best is not None and self.best.step is not None and self.best.step != seen_best
        return warnings, actions, is_best

    def replay(self, records: Iterable[Mapping]) -> None:
        """Read a resumed run's logged records again: the detector, guard and tracker end as they were."""
        for record in records:
            self.read(record)

    def forget_best(self) -> None:
        """The best step's saved state is gone (a resume from before it): the next logged step becomes the best."""
        if self.best is not None:
            self.best.step, self.best.value = None, -math.inf

    @property
    def should_stop(self) -> bool:
        return self.guard is not None and self.guard.should_stop

    def state(self) -> dict:
        """What the other processes need to train as the main one does (JSON-able)."""
        if self.guard is None:
            return {}
        return {"loss_name": self.guard.loss.name, "options": dict(self.guard.loss.options), "stop": self.guard.should_stop}

    def apply(self, state: Mapping) -> None:
        """Set the guard's loss and stop decision from the main process's ``state()``."""
        if self.guard is None or not state:
            return
        if (state["loss_name"], state["options"]) != (self.guard.loss.name, dict(self.guard.loss.options)):
            self.guard.loss = bind_loss(state["loss_name"], state["options"])  # the main process's guard changed it
        self.guard.should_stop = bool(state["stop"])

    @property
    def events(self) -> list[dict]:
        return list(self.detector.events)

    @property
    def actions(self) -> list[dict]:
        return [action.record() for action in self.guard.actions] if self.guard is not None else []

    @property
    def kept_step(self) -> int | None:
        return self.best.step if self.best is not None else None
