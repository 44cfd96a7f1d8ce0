"""`--config FILE`: any command's flags from a TOML, YAML or JSON file; flags on the command line win.

A file is a flat table of option names (`lr = 1e-6`, `batch-size: 4`, dashes or underscores) or
a run folder's own `run_config.json`, whose `invocation` holds the options its run was started
with: `dpo3d train-dpo --config runs/a/run_config.json --out runs/b` trains run a again.

The file becomes Click's ``default_map`` before any other option is read, so every option keeps
its one declared default, the file replaces it, and a flag given on the command line replaces
both. What a run was invoked with (:func:`invocation`) is what it writes back to run_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

#: never taken from a file: where a run writes, and whether it continues one, are the caller's
NOT_FROM_FILE = frozenset({"out", "resume", "config"})


def read_config(path: Path) -> dict[str, Any]:
    """The options a config file gives, keyed as the file spells them."""
    if not path.is_file():
        raise typer.BadParameter(f"{path}: no such file", param_hint="--config")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise typer.BadParameter(f"{path}: a config is .toml, .yaml/.yml or .json (a run's run_config.json)", param_hint="--config")
    except typer.BadParameter:
        raise
    except Exception as err:  # TOMLDecodeError, JSONDecodeError (ValueErrors) and yaml's YAMLError
        raise typer.BadParameter(f"{path}: cannot parse it: {str(err).splitlines()[0]}", param_hint="--config") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: a config is a table of option = value", param_hint="--config")
    if isinstance(data.get("invocation"), dict):  # a run's run_config.json
        return dict(data["invocation"].get("options") or {})
    return data


def _defaults_for(ctx: typer.Context, given: dict[str, Any], source: Path) -> dict[str, Any]:
    """Click's default_map from a file: keys are option names (``unseen_limit``) or flags (``unseen``)."""
    names: dict[str, str] = {}
    for param in ctx.command.params:
        if param.name:
            names[param.name] = param.name
            for flag in getattr(param, "opts", []):
                if flag.startswith("--"):
                    names[flag[2:].replace("-", "_")] = param.name
    defaults = {}
    for key, value in given.items():
        name = names.get(str(key).replace("-", "_"), str(key))
        if name in NOT_FROM_FILE:
            continue
        if name not in names.values():
            hidden = {param.name for param in ctx.command.params if getattr(param, "hidden", False)}  # old spellings
            known = ", ".join(sorted({flag.replace("_", "-") for flag, target in names.items()
                                      if target not in NOT_FROM_FILE | hidden}))
            raise typer.BadParameter(f"{source}: '{key}' is not an option of this command (options: {known})", param_hint="--config")
        defaults[name] = value
    return defaults


def load_config(ctx: typer.Context, param, value: Path | None) -> Path | None:
    """The eager ``--config`` callback: the file's options become the command's defaults."""
    if value is None or ctx.resilient_parsing:
        return value
    ctx.default_map = {**(ctx.default_map or {}), **_defaults_for(ctx, read_config(Path(value)), Path(value))}
    return value


CONFIG = typer.Option(
    None, "--config", is_eager=True, callback=load_config, show_default=False,
    help="Options from a TOML/YAML/JSON file (option = value; dashes or underscores), or a run's run_config.json "
    "to run it again; flags on the command line override the file. --out and --resume never come from it.",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def invocation(ctx: typer.Context) -> dict[str, Any]:
    """What run_config.json records of the command line: the command and every option's value."""
    options = {name: _jsonable(value) for name, value in ctx.params.items() if name not in NOT_FROM_FILE}
    return {"command": ctx.info_name, "options": options}
