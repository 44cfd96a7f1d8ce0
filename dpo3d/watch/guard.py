"""The 3D guard: act on the live detector's warnings, as Proposition 1 of the paper suggests.

The detector (``dpo3d.watch.detector.ThreeDDetector``) warns when a run shows a
drastic drop, likelihood displacement, degradation or dispersion. A guard turns those warnings into an
action on the loss, by one of three policies:

* ``sft``: add an SFT term on the chosen response, loss + α·(−logp_w/|y_w|) (the
  registry's ``sft`` loss as a mixture part), or raise α where the loss has one
  (``dpo-sft``, ``slic``): the chosen keeps a gradient that does not vanish as
  x2 → 0 (App. B.2.2);
* ``flex``: lower β_l, the rejected side's β of flex-β DPO (``dpo`` with β becomes
  ``flex`` with β_w = β, β_l = β·factor): the rejected likelihood falls more slowly
  (App. B.2.1);
* ``stop``: end the run; the state to keep is where the probe chosen log-prob peaked.

Every action is a ``GuardAction`` (step, policy, trigger, old → new values) that
loops write to their metrics, summary and stderr. ``BestTracker`` is the
``keep_best="chosen"`` bookkeeping, usable without a guard. The defaults are
stated once, in ``GuardSettings``.

In a step-wise training loop, after each logged probe record::

    detector = ThreeDDetector()
    guard = Guard.for_loss("sft", bind_loss("dpo", {"beta": 0.1}))
    ...
    warnings, actions = watch(detector, guard, record)
    for action in actions:
        log(action.record())
    output = guard.loss(batch)  # the bound loss to train with now: a change makes a new one
    if guard.should_stop:
        ...  # end; keep (or restore) the state of step guard.best.step

This module computes nothing on tensors: it reads probe records and changes the bound loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..losses.bound import BoundLoss
from ..losses.mixture import canonical_name, parse_mixture
from .detector import PROPERTIES

POLICIES = ("sft", "flex", "stop")
#: keep_best choices: the probe record field whose highest value marks the state to keep
KEEP_BEST = {"chosen": "probe_chosen_logp_delta"}


@dataclass(frozen=True)
class GuardSettings:
    """What a guard does, and when; the one place its defaults are stated."""

    #: the detector properties each policy acts on. sft and flex act from the first warning, a
    #: drastic drop included (Proposition 1: slow the rejected decline before the chosen suffers);
    #: stop waits for harm (the chosen falling, or mass leaving both responses)
    sft_on: tuple[str, ...] = PROPERTIES
    flex_on: tuple[str, ...] = PROPERTIES
    stop_on: tuple[str, ...] = ("likelihood_displacement", "degradation", "dispersion")
    #: sft: the α added to a loss without an SFT term; each later warning multiplies α by
    #: ``sft_factor``, never past ``sft_cap`` (dpo-sft's default α = 1: a loss that already has it
    #: at the cap is left alone)
    sft_weight: float = 0.1
    sft_factor: float = 2.0
    sft_cap: float = 1.0
    #: flex: each warning multiplies β_l by ``beta_rejected_factor``, never below
    #: ``beta_rejected_floor`` · β_w (the paper's flex setting β_l = β_w/2 is one step)
    beta_rejected_factor: float = 0.5
    beta_rejected_floor: float = 0.1

    def __post_init__(self) -> None:
        for name in ("sft_on", "flex_on", "stop_on"):
            unknown = set(getattr(self, name)) - set(PROPERTIES)
            if unknown:
                raise ValueError(f"guard {name}: unknown properties {sorted(unknown)}; choose from {', '.join(PROPERTIES)}")
        if not (self.sft_weight > 0 and self.sft_factor >= 1 and self.sft_cap >= self.sft_weight):
            raise ValueError("guard sft settings need sft_weight > 0, sft_factor >= 1 and sft_cap >= sft_weight")
        if not (0 < self.beta_rejected_factor < 1 and 0 < self.beta_rejected_floor <= 1):
            raise ValueError("guard flex settings need 0 < beta_rejected_factor < 1 and 0 < beta_rejected_floor <= 1")

    def triggers(self, policy: str) -> tuple[str, ...]:
        return {"sft": self.sft_on, "flex": self.flex_on, "stop": self.stop_on}[policy]


def guard_help(settings: GuardSettings = GuardSettings()) -> str:
    """What ``--guard`` does, with the settings' numbers."""
    return (
        f"Act on the live 3D detector's warnings, as the paper's Proposition 1 suggests: {' | '.join(POLICIES)}. "
        f"sft adds α·NLL(chosen) (α = {settings.sft_weight}, ×{settings.sft_factor:g} on each later warning, at most "
        f"{settings.sft_cap:g}; dpo-sft/slic raise their own α); flex turns dpo into flex-β and multiplies β_l by "
        f"{settings.beta_rejected_factor:g} per warning (never below {settings.beta_rejected_floor:g}·β_w); stop ends the "
        f"run on {' or '.join(p.replace('_', ' ') for p in settings.stop_on)} and leaves in OUT the model of the step "
        "where the probe chosen log-prob peaked. A change applies from the next step. Every action goes to "
        "metrics.jsonl (guard_actions), summary.json, stderr and the --plot figure. Default: the detector only warns."
    )


KEEP_BEST_HELP = (
    f"Keep OUT/best: the model of the logged step where the probe's {' / '.join(KEEP_BEST)} log-prob peaked "
    "(saved each time it rises; OUT/best/best.json gives the step). Implied by --guard stop."
)


@dataclass
class BestTracker:
    """The step where a probe field peaked (``keep_best="chosen"``: the probe chosen log-prob)."""

    key: str = KEEP_BEST["chosen"]
    step: int | None = None
    value: float = -math.inf

    @classmethod
    def for_metric(cls, name: str) -> BestTracker:
        if name not in KEEP_BEST:
            raise ValueError(f"keep-best '{name}': choose from {', '.join(KEEP_BEST)}")
        return cls(KEEP_BEST[name])

    def update(self, record: Mapping[str, Any]) -> bool:
        """True when ``record`` is the new best (ties keep the earlier step)."""
        value = record.get(self.key)
        if value is None or not value > self.value:
            return False
        self.step, self.value = int(record["step"]), float(value)
        return True


@dataclass(frozen=True)
class GuardAction:
    """One thing a guard did: at ``step``, on the detector's ``trigger``, ``changes`` name → (old, new)."""

    step: int
    policy: str
    trigger: str
    changes: Mapping[str, tuple[Any, Any]]
    message: str

    def record(self) -> dict:
        """The JSON form loops log (metrics.jsonl, summary.json)."""
        return {
            "step": self.step,
            "guard": self.policy,
            "trigger": self.trigger,
            "changes": {name: {"old": old, "new": new} for name, (old, new) in self.changes.items()},
            "message": self.message,
        }


def _check_applies(policy: str, loss: BoundLoss) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown guard '{policy}'; choose from {', '.join(POLICIES)}")
    if policy == "flex" and loss.name != "dpo" and "beta_rejected" not in loss.spec.defaults:
        raise ValueError(
            f"guard flex lowers β_l (beta_rejected): it applies to dpo (which becomes flex) and to losses "
            f"that take beta_rejected (flex); {loss.name} does neither"
        )


@dataclass
class Guard:
    """Per run: reads each logged probe record and the detector events it raised; decides actions.

    ``loss`` is the bound loss the loop should train with now: the run's ``base`` loss until an
    action replaces it with a new one (another loss, or other options); ``should_stop`` says the
    run should end, and ``best`` where the probe chosen log-prob peaked.
    """

    policy: str
    base: BoundLoss
    settings: GuardSettings = field(default_factory=GuardSettings)
    loss: BoundLoss | None = None  # None: the base loss
    should_stop: bool = False
    best: BestTracker = field(default_factory=BestTracker)
    actions: list[GuardAction] = field(default_factory=list)

    @classmethod
    def for_loss(cls, policy: str, loss: BoundLoss, settings: GuardSettings | None = None) -> Guard:
        """A guard for a run of ``loss``; a policy that cannot act on that loss is a ValueError."""
        _check_applies(policy, loss)
        return cls(policy, loss, settings or GuardSettings())

    def __post_init__(self) -> None:
        self.loss = self.loss or self.base

    @property
    def loss_name(self) -> str:
        return self.loss.name

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The options the current loss was given (its defaults apart)."""
        return dict(self.loss.options)

    def _current(self, key: str) -> float:
        """The value ``key`` has now under the current loss: given, or the loss's default."""
        return float(self.loss.values[key])

    # ------------------------------------------------------------------ the three policies

    def _sft(self) -> dict[str, tuple[Any, Any]]:
        s = self.settings
        if "sft_weight" in self.loss.spec.defaults:  # dpo-sft, slic: the loss's own α
            old = self._current("sft_weight")
            new = min(s.sft_cap, old * s.sft_factor) if old > 0 else s.sft_weight
            if not new > old:
                return {}
            self.loss = self.loss.with_options(sft_weight=new)
            return {"sft_weight": (old, new)}
        weights = dict(parse_mixture(self.loss_name))
        old = weights.get("sft", 0.0)
        new = min(s.sft_cap, old * s.sft_factor) if old > 0 else s.sft_weight
        if not new > old:
            return {}
        weights["sft"] = new
        name = canonical_name(list(weights.items()))
        changes = {"sft_weight": (old, new), "loss": (self.loss_name, name)}
        self.loss = self.loss.switch(name)
        return changes

    def _flex(self) -> dict[str, tuple[Any, Any]]:
        s = self.settings
        changes: dict[str, tuple[Any, Any]] = {}
        if self.loss_name == "dpo":  # dpo is flex with β_w = β_l = β
            beta = self._current("beta")
            self.loss = self.loss.switch("flex", beta_chosen=beta, beta_rejected=beta)
            changes["loss"] = ("dpo", "flex")
        old, chosen_beta = self._current("beta_rejected"), self._current("beta_chosen")
        new = max(old * s.beta_rejected_factor, s.beta_rejected_floor * chosen_beta)
        if not new < old:
            return changes
        self.loss = self.loss.with_options(beta_rejected=new)
        changes["beta_rejected"] = (old, new)
        return changes

    def _stop(self) -> dict[str, tuple[Any, Any]]:
        self.should_stop = True
        return {"stop": (False, True), "keep_step": (None, self.best.step)}

    # ------------------------------------------------------------------ the step-wise interface

    def update(self, record: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[GuardAction]:
        """Read one logged record and the detector events it raised; return the actions taken (0 or 1).

        At most one action per record: several warnings at once still raise α (or lower β_l) one step.
        Once stopped, a guard does nothing more.
        """
        self.best.update(record)
        if self.should_stop:
            return []
        wanted = self.settings.triggers(self.policy)
        fired = [event for event in events if event["property"] in wanted]
        if not fired:
            return []
        changes = {"sft": self._sft, "flex": self._flex, "stop": self._stop}[self.policy]()
        if not changes:  # at the cap (or the floor): nothing left to change
            return []
        trigger = fired[0]
        step = int(record["step"])
        described = ", ".join(f"{name} {_show(old)} → {_show(new)}" for name, (old, new) in changes.items())
        action = GuardAction(
            step=step,
            policy=self.policy,
            trigger=trigger["property"],
            changes=changes,
            message=f"step {step}: guard {self.policy} on {trigger['property'].replace('_', ' ')}: {described}",
        )
        self.actions.append(action)
        return [action]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Detector(Protocol):
    events: list[dict]

    def update(self, record: dict) -> list[str]: ...


def watch(detector: Detector, guard: Guard | None, record: dict) -> tuple[list[str], list[GuardAction]]:
    """Feed one logged record to the detector and then to the guard: (warnings, actions)."""
    seen = len(detector.events)
    warnings = detector.update(record)
    if guard is None:
        return warnings, []
    return warnings, guard.update(record, detector.events[seen:])
