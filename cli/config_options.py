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
    dataclass's (sft's learning rate) and ``helps`` where the setting means more there (PPO's step), so
    the difference is stated in one place too: beside the command's config, which lends both."""

    cls: type
    prefix: str = ""
    exclude: frozenset[str] = frozenset()
    only: frozenset[str] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    helps: Mapping[str, str] = field(default_factory=dict)

    def settings(self) -> list[Setting]:
        return [s for s in settings(self.cls)
                if s.name not in self.exclude and (self.only is None or s.name in self.only)]

    def param_name(self, setting: Setting) -> str:
        return setting.flag.get("param") or self.prefix + setting.name

    def typer_option(self, setting: Setting) -> Any:
        bounds = {key: setting.flag[key] for key in ("min", "max", "show_default") if key in setting.flag}
        default = self.defaults.get(setting.name, setting.default)
        return typer.Option(default, *setting.flags(self.prefix), help=self.helps.get(setting.name, setting.help), **bounds)

    def parameters(self) -> list[inspect.Parameter]:
        return [inspect.Parameter(self.param_name(s), inspect.Parameter.KEYWORD_ONLY,
                                  default=self.typer_option(s), annotation=s.flag.get("cli_type", s.type))
                for s in self.settings()]

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The config's field values among a command's parsed options (``ctx.params``); an option's
        ``none_at`` value (a 0 clipping norm, a 0 head chunk) becomes the field's None."""
        found = {}
        for setting in self.settings():
            if self.param_name(setting) in params:
                value = params[self.param_name(setting)]
                if "none_at" in setting.flag and value == setting.flag["none_at"]:
                    value = None
                found[setting.name] = value
        return found

    def build(self, params: Mapping[str, Any], **fields: Any) -> Any:
        return self.cls(**{**self.values(params), **fields})


def with_options(*groups: OptionGroup) -> Callable:
    """Add the groups' options to a command (keyword-only, after its own). The command reads them
    from ``ctx.params`` (through ``group.build``), so its own signature does not list them."""

    def decorate(fn: Callable) -> Callable:
        added = [p for group in groups for p in group.parameters()]
        names = {p.name for p in added}
        command = extend(fn, added, lambda kwargs: {key: value for key, value in kwargs.items() if key not in names})
        command.option_groups = (*getattr(fn, "option_groups", ()), *groups)  # what the command derives (tests)
        return command

    return decorate
