"""Loss options as users write them: ``name=value`` strings, and values checked against a loss's defaults.

The hyper-parameters of a loss are declared once, as the keyword-only parameters
of its function (their defaults give each option's type); this module splits
``--loss-arg``-style strings and gives a value the declared type, so a new loss
needs no edit in any command. ``bound.bind_loss`` is where they are checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def split_loss_args(items: Iterable[str]) -> dict[str, str]:
    """``["beta_rejected=0.02", "clip=3"]`` -> ``{"beta_rejected": "0.02", "clip": "3"}``, untyped.

    Dashes in names are read as underscores; a name given twice is an error.
    """
    values: dict[str, str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not text.strip():
            raise ValueError(f"loss option {item!r}: write name=value")
        if key in values:
            raise ValueError(f"loss option '{key}' given twice")
        values[key] = text.strip()
    return values


def _coerce_text(key: str, text: str, default: object) -> float | int | bool:
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


def coerce_option(key: str, value: object, default: object) -> float | int | bool:
    """``value`` (a string as typed, or a number/bool from a config) as the type of ``default``."""
    if isinstance(value, str):
        return _coerce_text(key, value.strip(), default)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"loss option {key}={value!r}: expected true or false")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"loss option {key}={value!r}: expected {'an integer' if isinstance(default, int) else 'a number'}")
    if isinstance(default, int):
        if value != int(value):
            raise ValueError(f"loss option {key}={value!r}: expected an integer")
        return int(value)
    return float(value)


def format_defaults(defaults: Mapping[str, object]) -> str:
    return ", ".join(f"{key}={value}" for key, value in defaults.items()) or "—"
