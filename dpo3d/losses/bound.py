"""A loss bound once: a registered loss (or a mixture) with its checked options, built where a run starts.

``bind_loss("flex", {"beta_rejected": "0.02"})`` looks the name up, checks every option
against the loss's keyword defaults (an unknown name is an error naming the ones it
takes; a value gets the default's type) and returns a ``BoundLoss``: called on a
``PreferenceBatch`` it gives the ``LossOutput``. Training loops, the guard and the
diagnostics take the bound loss and never look a name up or sort options again; a
guard that changes the loss makes a new one (``switch``, ``with_options``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from .lookup import get_loss
from .options import coerce_option
from .registry import LossOutput, LossSpec, PreferenceBatch

Option = float | int | bool


def _unknown(spec: LossSpec, key: str) -> str:
    takes = ", ".join(spec.defaults) or "no options"
    return f"loss '{spec.name}' has no option '{key}'; it takes: {takes}"


def check_options(spec: LossSpec, options: Mapping[str, object]) -> dict[str, Option]:
    """``options`` typed as ``spec``'s defaults; a name it does not take is a ValueError naming the ones it does.

    None means 'the default' and is dropped; dashes in names are read as underscores.
    """
    checked: dict[str, Option] = {}
    for raw, value in options.items():
        key = raw.replace("-", "_")
        if value is None:
            continue
        if key not in spec.defaults:
            raise ValueError(_unknown(spec, key))
        checked[key] = coerce_option(key, value, spec.defaults[key])
    return checked


@dataclass(frozen=True, eq=False)
class BoundLoss:
    """A loss of the registry with the options a run gives it; ``options`` hold only those given."""

    spec: LossSpec
    options: Mapping[str, Option] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def inputs(self) -> frozenset[str]:
        return self.spec.inputs

    @property
    def values(self) -> dict[str, Option]:
        """Every option this loss takes, with the defaults filled in."""
        return {**{k: v for k, v in self.spec.defaults.items() if v is not None}, **self.options}

    def __call__(self, batch: PreferenceBatch) -> LossOutput:
        return self.spec.fn(batch, **self.options)

    def with_options(self, **changes: object) -> BoundLoss:
        """The same loss with some options changed (checked like the first ones)."""
        return BoundLoss(self.spec, {**self.options, **check_options(self.spec, changes)})

    def switch(self, name: str, **changes: object) -> BoundLoss:
        """Another loss (a guard's change: dpo → flex, dpo → dpo + sft), keeping the options it also takes."""
        spec = get_loss(name)
        kept = {key: value for key, value in self.options.items() if key in spec.defaults}
        return BoundLoss(spec, {**kept, **check_options(spec, changes)})

    def to_json(self) -> dict:
        return {"loss": self.name, "hyperparameters": dict(self.options)}

    @property
    def key(self) -> tuple:
        return self.name, tuple(sorted(self.options.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoundLoss) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __reduce__(self):
        # a mixture's function is built per lookup: another process binds the same name and options again
        return bind_loss, (self.name, dict(self.options))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"BoundLoss({self.name}{': ' + shown if shown else ''})"


def bind_loss(name: str, options: Mapping[str, object] | None = None) -> BoundLoss:
    """The loss ``name`` (registered, or a mixture such as ``dpo:0.8,sft:1``) with ``options`` checked."""
    spec = get_loss(name)
    return BoundLoss(spec, check_options(spec, options or {}))


def bind_losses(
    names: Iterable[str], options: Mapping[str, object] | None = None, *, may_go_unused: Collection[str] = ()
) -> list[BoundLoss]:
    """Several losses sharing one set of options (a sweep, a study): each takes the options it has.

    An option none of them takes is an error naming what each takes, unless it is in ``may_go_unused``
    (a value meant for whichever losses have it, such as a study's β).
    """
    specs = [get_loss(name) for name in names]
    given = {key.replace("-", "_"): value for key, value in (options or {}).items() if value is not None}
    for key in given:
        if key not in may_go_unused and not any(key in spec.defaults for spec in specs):
            raise ValueError("; ".join(_unknown(spec, key) for spec in specs))
    return [BoundLoss(spec, check_options(spec, {k: v for k, v in given.items() if k in spec.defaults})) for spec in specs]
