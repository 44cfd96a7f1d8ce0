"""The 3D detector: name the property a run shows, from its logged probe records, and nothing else.

It reads, per logged record, the probe changes since step 0 (``probe_*_logp_delta`` summed over
the response, ``probe_*_logp_per_token_delta`` per token; means over the fixed probe pairs) and,
where logged, the token-level split at each pair's first differing token
(``probe_divergence_*_p``, :mod:`dpo3d.watch.divergence`). With Δc, Δr the chosen and rejected
changes and the margin Δc − Δr (PAPER.md, "Telling the properties apart"):

* **drastic drop** (Cor. 1): the chosen rises and the rejected falls ≥ ``drop_ratio``× faster,
  since step 0 or over the last logged interval. About rates while the chosen rises: a falling
  chosen is never a drastic drop;
* **likelihood displacement** (Razin et al. 2025): the chosen falls below where it started, never
  having risen, while the margin grows (or while the rejected falls too: the pair pushed down as a
  whole). A chosen falling while the rejected rises is training gone the wrong way, not this;
* **degradation** (Cor. 2): the chosen rose to a peak and has fallen from it while the margin grows;
* **dispersion** (Cor. 3): both fall while mass rises on responses in no pair: the unseen
  candidates, the starting policy's own greedy response and samples (the squeezing probes), or,
  at token level, the share of the next-token distribution on neither pair's token.

Rates of chosen against rejected (the drastic drop) are compared per token, the view that is fair
when they differ in length (a long rejected beside a short chosen makes any summed comparison
"drastic" by length alone). A response compared with itself (has the chosen fallen? has a response
in no pair gained?) is read summed: the factor by which the whole response became less or more
likely. Each event reports both views. A change counts only above its threshold and above
``noise_multiple`` × the rounding noise the run measured at step 0 (``probe_noise_nats`` and
``probe_noise_nats_per_token``: how far a probe's score moves with the batch it is scored in, and
at least the compute precision's unit roundoff times the score).

An *episode* is a run of consecutive logged records where a condition holds: one event when it
starts, none again until it has stopped holding. The detector is a pure reader of dicts: train-dpo,
the toy, ``dpo3d diagnose`` and trainers outside dpo3d feed it the same records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dpo3d.config.fields import option

PROPERTIES = ("drastic_drop", "likelihood_displacement", "degradation", "dispersion")
SIDES = ("chosen", "rejected")
#: responses in no pair, as dispersion names them (probe group → words)
ELSEWHERE = {"unseen": "unseen candidates", "greedy": "the starting policy's greedy responses",
             "samples": "the starting policy's samples"}
NOISE_SUMMED, NOISE_PER_TOKEN = "probe_noise_nats", "probe_noise_nats_per_token"
OTHER_P = "probe_divergence_other_p"  # divergence.PREFIX + "other_p" (the detector imports only dpo3d.config)


def summed_key(group: str) -> str:
    return f"probe_{group}_logp_delta"


def per_token_key(group: str) -> str:
    return f"probe_{group}_logp_per_token_delta"


@dataclass(frozen=True)
class DetectorSettings:
    """The thresholds, each with its reason; the one place they are stated."""

    #: Cor. 1's "much faster": under 5x the two sides move at rates a reader would call comparable
    drop_ratio: float = option(
        5.0, "Drastic drop: the rejected falls at least this many times faster than the chosen rises (per token).")
    #: nats per token a side must move for its rate to count: a 2% change of each token's probability
    min_rate: float = option(0.02, "Nats per token a side must move for its rate to count.")
    #: nats a response's summed log-prob must move (the chosen fall from its start or peak, a response
    #: in no pair gain) to count: 1 nat is the whole response becoming e ≈ 2.7x less (or more) likely
    min_fall: float = option(
        1.0, "Nats (summed) the chosen must fall from its start (displacement) or peak (degradation), or a response "
        "in no pair gain (dispersion).")
    #: a change since step 0 is the difference of two scores each off by up to the measured noise, so
    #: rounding alone moves it by up to 2x the noise; 3x leaves a margin
    noise_multiple: float = option(
        3.0, "Changes within this many times the run's measured rounding noise (step 0) are no change.")
    #: share of the next-token distribution at the first differing token that must move to other
    #: tokens before token-level dispersion counts: 2 points of probability
    min_mass: float = option(
        0.02, "Token-level dispersion: how much the share of other tokens at the first differing token must grow.")

    def __post_init__(self) -> None:
        if not (self.drop_ratio > 1 and self.min_rate > 0 and self.min_fall > 0 and self.noise_multiple >= 0
                and 0 < self.min_mass < 1):
            raise ValueError("detector settings need drop_ratio > 1, min_rate > 0, min_fall > 0, noise_multiple >= 0, "
                             "0 < min_mass < 1")


@dataclass
class Changes:
    """One logged record's probe changes since step 0: per token (what the detector decides on) and summed."""

    step: int
    per_token: dict[str, float]
    summed: dict[str, float]
    other_p: float | None = None

    @classmethod
    def read(cls, record: Mapping) -> Changes | None:
        """None for a record without chosen and rejected probes. A record without per-token changes
        (older runs) is decided on its summed ones."""
        summed = {g: float(record[summed_key(g)]) for g in (*SIDES, *ELSEWHERE) if _number(record.get(summed_key(g)))}
        if not all(side in summed for side in SIDES):
            return None
        per_token = {g: float(record[per_token_key(g)]) for g in summed if _number(record.get(per_token_key(g)))}
        if not all(side in per_token for side in SIDES):
            per_token = dict(summed)
        per_token = {**summed, **per_token}  # a group logged summed only is read (and shown) in its summed value
        other = record.get(OTHER_P)
        return cls(int(record["step"]), per_token, summed, float(other) if _number(other) else None)

    def margin(self, view: str = "per_token") -> float:
        values = getattr(self, view)
        return values["chosen"] - values["rejected"]

    def show(self, group: str) -> str:
        """'-0.12 nats/token (-10.00 summed)'."""
        return f"{self.per_token[group]:+.3f} nats/token ({self.summed[group]:+.2f} summed)"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class ThreeDDetector:
    settings: DetectorSettings = field(default_factory=DetectorSettings)
    active: dict[str, bool] = field(default_factory=dict)
    previous: Changes | None = None
    noise: float = 0.0  # per token, from the step-0 record
    noise_summed: float = 0.0
    start_other_p: float | None = None
    chosen_peak: float = 0.0  # summed
    chosen_peak_step: int = 0
    events: list[dict] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        """Nats per token a rate must exceed: the larger of min_rate and the noise floor."""
        return max(self.settings.min_rate, self.settings.noise_multiple * self.noise)

    @property
    def fall(self) -> float:
        """Nats a response's summed change must exceed: the larger of min_fall and the noise floor."""
        return max(self.settings.min_fall, self.settings.noise_multiple * self.noise_summed)

    def _episode(self, name: str, holds: bool, now: Changes, since: int, message: str) -> list[str]:
        starts = holds and not self.active.get(name, False)
        self.active[name] = holds
        if not starts:
            return []
        self.events.append({
            "property": name, "step": now.step, "since": since, "message": message,
            "per_token": dict(now.per_token), "summed": dict(now.summed),
            "threshold_per_token": self.threshold, "threshold_summed": self.fall,
            "noise_per_token": self.noise, "noise_summed": self.noise_summed,
            **({"divergence_other_p": now.other_p} if now.other_p is not None else {}),
        })
        return [message]

    def update(self, record: Mapping) -> list[str]:
        """Read one logged record; the messages of the events that start at it."""
        if _number(record.get(NOISE_PER_TOKEN)):
            self.noise = float(record[NOISE_PER_TOKEN])
            self.noise_summed = float(record.get(NOISE_SUMMED) or 0.0)
        now = Changes.read(record)
        if now is None:
            return []
        if self.start_other_p is None and now.other_p is not None:
            self.start_other_p = now.other_p
        warnings = self._drastic_drop(now) + self._chosen_falls(now) + self._dispersion(now)
        if now.summed["chosen"] > self.chosen_peak:
            self.chosen_peak, self.chosen_peak_step = now.summed["chosen"], now.step
        self.previous = now
        return warnings

    def read_all(self, records: Iterable[Mapping]) -> list[dict]:
        """Every record in order (a finished run's metrics.jsonl); the events."""
        for record in records:
            self.update(record)
        return list(self.events)

    # ------------------------------------------------------------------ the properties

    def _drastic_drop(self, now: Changes) -> list[str]:
        t, ratio = self.threshold, self.settings.drop_ratio
        chosen, rejected = now.per_token["chosen"], now.per_token["rejected"]
        rose, fell, since = chosen, -rejected, 0
        # a chosen falling now is never a drastic drop, however far it rose before (that is degradation's case)
        falling = self.previous is not None and chosen - self.previous.per_token["chosen"] < -t
        holds = not falling and rose > t and fell > t and fell >= ratio * rose
        if not holds and not falling and self.previous is not None and chosen > t:
            # the same rates over the last interval: the chosen, up since step 0, holds or rises while the
            # rejected still plunges (a chosen falling over the interval is not this property)
            rose = chosen - self.previous.per_token["chosen"]
            fell, since = self.previous.per_token["rejected"] - rejected, self.previous.step
            holds = fell > t and fell >= ratio * max(rose, t)  # not falling: rose > -t already
        ratio_seen = fell / max(rose, t)
        return self._episode(
            "drastic_drop", holds, now, since,
            f"step {now.step}: drastic drop — since step {since} the rejected log-prob fell {fell:.3f} nats/token "
            f"while the chosen rose {max(rose, 0.0):.3f} ({ratio_seen:.0f}× faster); since step 0 chosen "
            f"{now.show('chosen')}, rejected {now.show('rejected')}",
        )

    def _margin_grows(self, now: Changes) -> bool:
        """The summed margin, the one DPO's loss reads, grew over the last logged interval."""
        previous = self.previous.margin("summed") if self.previous is not None else 0.0
        return now.margin("summed") > previous + 2 * self.settings.noise_multiple * self.noise_summed

    def _chosen_falls(self, now: Changes) -> list[str]:
        """Likelihood displacement (never rose) and degradation (rose, then fell), both while the margin grows."""
        t, chosen = self.fall, now.summed["chosen"]
        grows = self._margin_grows(now)
        never_rose = self.chosen_peak <= t
        # pushed down with the rejected (a shrinking margin too: the pair is unlearned as a whole); a chosen
        # falling while the rejected rises is training the wrong way, not this property
        displaced = never_rose and chosen < -t and (grows or now.summed["rejected"] < -t)
        degraded = not never_rose and self.chosen_peak - chosen > t and grows
        margin = f"{now.margin():+.3f} nats/token ({now.margin('summed'):+.2f} summed)"
        how = f"while the margin grew to {margin}" if grows else f"with the rejected ({now.show('rejected')}); margin {margin}"
        return self._episode(
            "likelihood_displacement", displaced, now, 0,
            f"step {now.step}: likelihood displacement — the chosen log-prob moved {now.show('chosen')} since step 0 "
            f"and never rose, {how}: training pushes the chosen response down too",
        ) + self._episode(
            "degradation", degraded, now, self.chosen_peak_step,
            f"step {now.step}: degradation — the chosen log-prob is {self.chosen_peak - chosen:.2f} nats below "
            f"its peak at step {self.chosen_peak_step} ({self.chosen_peak:+.2f}; now {now.show('chosen')}) while the "
            f"margin still grows ({margin}): the rejected is unlearned instead of the chosen learned",
        )

    def _dispersion(self, now: Changes) -> list[str]:
        t = self.fall
        both_fall = now.summed["chosen"] < -t and now.summed["rejected"] < -t
        gained = [f"{words} {now.show(group)}" for group, words in ELSEWHERE.items()
                  if now.summed.get(group, -t) > t]
        if now.other_p is not None and self.start_other_p is not None and now.other_p - self.start_other_p > self.settings.min_mass:
            gained.append(f"other tokens at the first differing token {self.start_other_p:.3f} → {now.other_p:.3f}")
        return self._episode(
            "dispersion", both_fall and bool(gained), now, 0,
            f"step {now.step}: dispersion — probability rose on responses in no pair ({'; '.join(gained)}) while "
            f"chosen {now.show('chosen')} and rejected {now.show('rejected')} both fell",
        )
