"""The live 3D detector: warn, once per episode, when a run shows a 3D-property.

It reads the probe measurements of each logged record (log-probs of a fixed set
of pairs and of unseen candidates, as changes since step 0, in nats summed over
the response) and raises:

* **drastic drop** — the rejected log-prob has fallen ``drop_ratio`` times more
  than the chosen one has risen (and by at least ``min_drop`` nats), since step 0
  or over the last logged interval (the paper's claim is about rates: once the
  chosen has stopped rising, the rejected still plunges);
* **degradation** — the chosen log-prob has fallen ``min_drop`` nats below its
  peak while the margin (chosen change − rejected change) still grows since the
  last log: DPO is unlearning the rejected response instead of learning the chosen;
* **dispersion** — the log-prob of responses in neither rose while both chosen and
  rejected are below where they started: the unseen candidates, or the starting
  policy's own greedy response and samples (the squeezing probes: Ren & Sutherland
  2025 show the negative gradient squeezes mass onto the most likely response).

An *episode* is a run of consecutive logged steps where the condition holds:
one warning when it starts, none again until it has stopped holding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHOSEN, REJECTED, UNSEEN = "probe_chosen_logp_delta", "probe_rejected_logp_delta", "probe_unseen_logp_delta"
GREEDY, SAMPLES = "probe_greedy_logp_delta", "probe_samples_logp_delta"
#: the responses in neither chosen nor rejected, as the dispersion warning names them
ELSEWHERE = {UNSEEN: "unseen candidates", GREEDY: "the starting policy's greedy responses",
             SAMPLES: "the starting policy's samples"}


@dataclass
class ThreeDDetector:
    drop_ratio: float = 5.0
    min_drop: float = 1.0
    tolerance: float = 0.05
    active: dict[str, bool] = field(default_factory=dict)
    previous: dict | None = None
    chosen_peak: float = 0.0
    events: list[dict] = field(default_factory=list)

    def _episode(self, name: str, holds: bool, step: int, message: str) -> list[str]:
        starts = holds and not self.active.get(name, False)
        self.active[name] = holds
        if starts:
            self.events.append({"property": name, "step": step, "message": message})
            return [message]
        return []

    def update(self, record: dict) -> list[str]:
        if CHOSEN not in record or REJECTED not in record:
            return []
        step, chosen, rejected = record["step"], record[CHOSEN], record[REJECTED]
        warnings = []
        fell = -rejected
        rose = max(chosen, 0.0)
        since, chosen_change = "since step 0", chosen
        holds = fell > self.min_drop and fell > self.drop_ratio * max(rose, self.tolerance)
        if not holds and self.previous is not None:  # the same test on the last interval's rates
            chosen_change = chosen - self.previous[CHOSEN]
            fell, rose = self.previous[REJECTED] - rejected, max(chosen_change, 0.0)
            since = f"since step {self.previous['step']}"
            holds = fell > self.min_drop and fell > self.drop_ratio * max(rose, self.tolerance)
        direction = f"rose {chosen_change:.2f}" if chosen_change > 0 else f"fell {-chosen_change:.2f}"
        ratio = fell / max(rose, self.tolerance)
        warnings += self._episode(
            "drastic_drop", holds, step,
            f"step {step}: drastic drop — rejected log-prob fell {fell:.2f} nats {since} while chosen "
            f"{direction} ({ratio:.0f}× faster)",
        )
        self.chosen_peak = max(self.chosen_peak, chosen)
        if self.previous is not None:
            below_peak = self.chosen_peak - chosen
            margin, previous_margin = chosen - rejected, self.previous[CHOSEN] - self.previous[REJECTED]
            holds = below_peak > self.min_drop and margin > previous_margin + self.tolerance
            warnings += self._episode(
                "degradation", holds, step,
                f"step {step}: degradation — chosen log-prob is {below_peak:.2f} nats below its peak "
                f"({self.chosen_peak:.2f}) while the margin still grows ({previous_margin:.2f} → {margin:.2f})",
            )
        rose_elsewhere = {name: record[key] for key, name in ELSEWHERE.items()
                          if record.get(key) is not None and record[key] > self.tolerance}
        if any(record.get(key) is not None for key in ELSEWHERE):
            holds = bool(rose_elsewhere) and chosen < -self.tolerance and rejected < -self.tolerance
            gained = ", ".join(f"{name} {value:+.2f}" for name, value in rose_elsewhere.items())
            warnings += self._episode(
                "dispersion", holds, step,
                f"step {step}: dispersion — log-prob rose on responses in neither ({gained} nats) while chosen "
                f"({chosen:.2f}) and rejected ({rejected:.2f}) both fell",
            )
        self.previous = {"step": step, CHOSEN: chosen, REJECTED: rejected}
        return warnings
