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

from ..run_watch import RunWatch as _RunWatch
from ..training.detector import CHOSEN, GREEDY, REJECTED, UNSEEN


class RunWatch(_RunWatch):
    """One toy run's detector, guard and best-step tracker (``dpo3d.run_watch``), read from its four probes."""

    def observe(self, step: int, chosen: float, rejected: float, unseen: float, greedy: float) -> bool:
        """Read one step's probes; True when the guard changed the loss or stopped the run."""
        _, actions, _ = self.read({"step": step, CHOSEN: chosen, REJECTED: rejected, UNSEEN: unseen, GREEDY: greedy})
        return bool(actions)
