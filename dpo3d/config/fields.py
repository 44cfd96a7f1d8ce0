"""A setting declared once: a dataclass field with its default and one-line help.

The habit of 🤗's ``HfArgumentParser`` (TRL's ``DPOConfig``): ``metadata["help"]`` beside the
default. The command layer turns each field marked ``cli`` into an option of every command that
takes the config; config files and run_config.json use the field names.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field
from typing import Any


def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING, cli: bool = True, **flag: Any) -> Any:
    """A config field with its help. ``cli``: whether commands offer it as an option; ``flag``: how,
    where the plain ``--<name-with-dashes>`` is not it (``flags``: the option's names, ``min``/``max``:
    bounds, ``show_default``; ``none_at``: the option's value that means the field's None, such as a
    0 clipping norm; ``param``: the command's parameter name where it is not the field's; ``cli_type``: what
    the command line gives where the field holds more, such as a data source's name for a DataSpec field)."""
    return field(default=default, default_factory=default_factory, metadata={"help": help, "cli": cli, **flag})


@dataclass(frozen=True)
class Setting:
    """One field of a config as a command option: its name, type, default and how it is spelled."""

    name: str
    type: Any
    default: Any
    help: str
    flag: dict

    def flags(self, prefix: str = "") -> tuple[str, ...]:
        return tuple(self.flag.get("flags") or (f"--{prefix}{self.name}".replace("_", "-"),))


def settings(cls: type) -> Iterator[Setting]:
    """The fields of the dataclass ``cls`` that commands offer as options, in declaration order."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        meta = dict(item.metadata)
        if not meta.pop("cli", False):
            continue
        default = item.default if item.default is not MISSING else (
            item.default_factory() if item.default_factory is not MISSING else None)
        help_text = meta.pop("help", "")
        yield Setting(item.name, hints[item.name], default, help_text, meta)
