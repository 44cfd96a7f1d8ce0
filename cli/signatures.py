"""Adding options to a typer command without listing them in its own signature.

typer reads a command's options from its signature; ``extend`` gives a command more keyword-only
parameters (options derived from a config, hidden old spellings) and lets ``prepare`` turn the call's
keyword arguments into the ones the command itself takes. Used by ``config_options.with_options``
and ``renamed.renamed``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


def extend(fn: Callable, added: list[inspect.Parameter], prepare: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
    """``fn`` with ``added`` after its own parameters (made keyword-only); each call's keyword arguments
    go through ``prepare`` before ``fn`` gets them."""
    own = inspect.signature(fn, eval_str=True)
    clash = {p.name for p in added} & set(own.parameters)
    if clash:
        raise TypeError(f"{fn.__module__}.{fn.__name__} declares {sorted(clash)} itself and again through a decorator")
    added = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in added]

    @functools.wraps(fn)
    def command(*args, **kwargs):
        return fn(*args, **prepare(kwargs))

    command.__signature__ = own.replace(parameters=[*own.parameters.values(), *added])
    command.__annotations__ = {**getattr(fn, "__annotations__", {}), **{p.name: p.annotation for p in added}}
    return command
