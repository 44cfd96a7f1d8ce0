"""Loss options as users write them: ``name=value`` strings checked against a loss's signature.

The hyper-parameters of a loss are declared once, as the keyword-only parameters
of its function; this module turns ``--loss-arg``-style strings into values of
the declared type, so a new loss needs no edit in any command.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .registry import LossSpec

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, text: str, default: object) -> float | int | bool:
    text = text.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"loss option {key}={text!r}: expected true or false")
    try:
        return int(text) if isinstance(default, int) else float(text)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"loss option {key}={text!r}: expected {kind}") from None


def parse_loss_args(spec: LossSpec, items: Iterable[str]) -> dict[str, float | int | bool]:
    """``["beta_rejected=0.02", "clip=3"]`` -> ``{"beta_rejected": 0.02, "clip": 3.0}`` for ``spec``.

    Dashes in names are read as underscores. A name the loss does not take is an
    error naming the ones it does; a name given twice is an error.
    """
    values: dict[str, float | int | bool] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not text.strip():
            raise ValueError(f"loss option {item!r}: write name=value")
        if key not in spec.defaults:
            takes = ", ".join(spec.defaults) or "no options"
            raise ValueError(f"loss '{spec.name}' has no option '{key}'; it takes: {takes}")
        if key in values:
            raise ValueError(f"loss option '{key}' given twice")
        values[key] = _coerce(key, text, spec.defaults[key])
    return values


def format_defaults(defaults: Mapping[str, object]) -> str:
    return ", ".join(f"{key}={value}" for key, value in defaults.items()) or "—"
