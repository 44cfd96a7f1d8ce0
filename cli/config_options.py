"""Command options derived from the library's config dataclasses.

A config field declared with :func:`dpo3d.config.fields.option` (its default and help) becomes a
typer option of every command that takes the config: ``@with_options(LOOP, LORA)`` adds them to
the command's signature, and ``LOOP.build(ctx.params)`` turns the parsed values back into the
config. So adding a loop setting is one field in ``LoopConfig``: sft, train-dpo, train-rm (and
``--config`` files and run_config.json, which use the same names) get it from there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import typer

from dpo3d.config.fields import Setting, settings

from .signatures import extend


@dataclass(frozen=True)
class OptionGroup:
    """The options of one config dataclass: every ``cli`` field, named ``prefix + field`` (or the
    field's ``param``), minus ``exclude``; ``defaults`` where a command's default differs from the
    dataclass's (sft's learning rate), so the difference is stated in one place too."""

    cls: type
    prefix: str = ""
    exclude: frozenset[str] = frozenset()
    only: frozenset[str] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def settings(self) -> list[Setting]:
        return [s for s in settings(self.cls)
                if s.name not in self.exclude and (self.only is None or s.name in self.only)]

    def param_name(self, setting: Setting) -> str:
        return setting.flag.get("param") or self.prefix + setting.name

    def typer_option(self, setting: Setting) -> Any:
        bounds = {key: setting.flag[key] for key in ("min", "max", "show_default") if key in setting.flag}
        default = self.defaults.get(setting.name, setting.default)
        return typer.Option(default, *setting.flags(self.prefix), help=setting.help, **bounds)

    def parameters(self) -> list[inspect.Parameter]:
        return [inspect.Parameter(self.param_name(s), inspect.Parameter.KEYWORD_ONLY,
                                  default=self.typer_option(s), annotation=s.type)
                for s in self.settings()]

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The config's field values among a command's parsed options (``ctx.params``)."""
        return {s.name: params[self.param_name(s)] for s in self.settings() if self.param_name(s) in params}

    def build(self, params: Mapping[str, Any], **fields: Any) -> Any:
        return self.cls(**{**self.values(params), **fields})


def with_options(*groups: OptionGroup) -> Callable:
    """Add the groups' options to a command (keyword-only, after its own). The command reads them
    from ``ctx.params`` (through ``group.build``), so its own signature does not list them."""

    def decorate(fn: Callable) -> Callable:
        added = [p for group in groups for p in group.parameters()]
        names = {p.name for p in added}
        return extend(fn, added, lambda kwargs: {key: value for key, value in kwargs.items() if key not in names})

    return decorate

def option_from(cls: type, name: str, default: Any = None, prefix: str = "") -> Any:
    """One field's typer option, for a command that takes a single setting of a config (its default
    overridden where the command's own config says otherwise)."""
    (setting,) = [s for s in settings(cls) if s.name == name]
    group = OptionGroup(cls, prefix, defaults={} if default is None else {name: default})
    return group.typer_option(setting)
