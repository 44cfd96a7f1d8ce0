"""Old spellings of renamed flags, kept for one release: hidden from --help, a warning on stderr when used.

    @renamed(Renamed("--steps", "max_steps", "--max-steps"))
    def command(..., max_steps: int = ...): ...

adds a hidden ``--steps`` to the command that fills ``max_steps`` (with the same type and bounds),
prints ``warning: --steps is deprecated; it is now --max-steps`` when it is given, and refuses the
old and the new spelling together (a UsageError: one line, from the command layer's error boundary). The command's own signature, and what run_config.json records
(``ctx.params``), know only the new name.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

import typer

from .common import UsageError, console
from .signatures import extend

CONTEXT = "renamed_context"


@dataclass(frozen=True)
class Renamed:
    old: str  # the old spelling: "--steps", or a short form such as "-p"
    target: str  # the parameter it fills now: "max_steps"
    new: str  # how to write it now: "--max-steps"
    value: Any = None  # for an old boolean flag (--no-rm): what giving it sets the target to
    why: str = ""  # a few words on why it changed, added to the warning

    @property
    def param(self) -> str:
        return "renamed_" + self.old.lstrip("-").replace("-", "_")

    def warning(self) -> str:
        return f"warning: {self.old} is deprecated; it is now {self.new}" + (f" ({self.why})" if self.why else "")


def renamed(*aliases: Renamed):
    """Give a command hidden, warning aliases for the old spellings of its flags."""

    def decorate(fn):
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        added = []
        for alias in aliases:
            target = signature.parameters[alias.target].default
            if alias.value is not None:  # an old boolean flag
                annotation, option = bool, typer.Option(False, alias.old, hidden=True)
            else:
                annotation = hints[alias.target]
                option = typer.Option(None, alias.old, hidden=True, min=getattr(target, "min", None),
                                      max=getattr(target, "max", None), help=f"Deprecated: {alias.new}.")
            added.append(inspect.Parameter(alias.param, inspect.Parameter.KEYWORD_ONLY, default=option,
                                           annotation=annotation))

        # the context tells a flag given on the command line from a default: ask typer for it where fn does not
        own_context = next((name for name, hint in hints.items() if hint is typer.Context), None)
        wants_context = own_context is None
        if wants_context:
            added.append(inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        def prepare(kwargs: dict[str, Any]) -> dict[str, Any]:
            ctx = kwargs.pop(CONTEXT) if wants_context else kwargs.get(own_context)
            for alias in aliases:
                given = kwargs.pop(alias.param, None)
                if ctx is not None:
                    ctx.params.pop(alias.param, None)
                if given is None or given is False:
                    continue
                if ctx is not None and _from_command_line(ctx, alias.target):
                    raise UsageError(f"{alias.old} is the old spelling of {alias.new}: give one of them")
                console.print(alias.warning(), style="yellow", markup=False, highlight=False, soft_wrap=True)
                value = alias.value if alias.value is not None else given
                kwargs[alias.target] = value
                if ctx is not None:
                    ctx.params[alias.target] = value
            return kwargs

        wrapper = extend(fn, added, prepare)
        wrapper.renamed = aliases  # the old spellings, for the flag-vocabulary test
        return wrapper

    return decorate


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
