"""The toy's probes fed to train-dpo's live 3D detector, and the guard acting on its warnings.

Each step, every run gets one probe record in train-dpo's fields, changes since
step 0 (the reference) in nats: ``probe_chosen_logp_delta`` (mean over pairs of
log x1 − its reference value), ``probe_rejected_logp_delta`` (the same for x2) and
``probe_unseen_logp_delta`` (mean over prompts of log π(9|x) and log π(10|x)) and
``probe_greedy_logp_delta`` (mean over prompts of the log-prob of the reference's most
likely response: train-dpo's greedy probe, where the squeezing effect would show).
Every toy response is one token long, so each change is also the per-token change the
detector decides on. The same ``ThreeDDetector`` reads it; a ``Guard`` (--guard) turns its warnings into
a change of the run's loss or a stop, and a ``BestTracker`` (--keep-best, implied
by --guard stop) remembers the step where the probe chosen log-prob peaked.
"""

from __future__ import annotations

from ..watch.detector import DetectorSettings, per_token_key, summed_key
from ..watch.run import RunWatch as _RunWatch

#: one-token responses: a fall of 0.05 nats is a 5% fall of the response's probability (train-dpo's 1 nat is
#: meant for sums over a response's tokens)
TOY_DETECTOR = DetectorSettings(min_fall=0.05)


class RunWatch(_RunWatch):
    """One toy run's detector, guard and best-step tracker (``dpo3d.watch.run``), read from its four probes."""

    def observe(self, step: int, chosen: float, rejected: float, unseen: float, greedy: float,
                greedy_unpaired: bool = False) -> bool:
        """Read one step's probes; True when the guard changed the loss or stopped the run. The greedy probe
        reaches the detector (as a response in no pair) only when ``greedy_unpaired``."""
        changes = {"chosen": chosen, "rejected": rejected, "unseen": unseen}
        if greedy_unpaired:
            changes["greedy"] = greedy
        record = {"step": step, **{summed_key(g): v for g, v in changes.items()},
                  **{per_token_key(g): v for g, v in changes.items()}}  # one token: per token = summed
        _, actions, _ = self.read(record)
        return bool(actions)
