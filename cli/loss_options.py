"""The loss options of `train-dpo` and `toy`: `--loss-arg KEY=VALUE` (repeatable), one parser for both.

A loss's options and their defaults are stated once, as the keyword defaults of its function in
the registry; `--list-losses` prints them, and a new loss needs no new flag. The per-loss flags of
earlier releases (`--beta`, `--beta-chosen`, ...) stay one release as hidden aliases: each prints a
deprecation warning and sets the same option as `--loss-arg`. A run records them as `--loss-arg`,
and a run_config.json written before (with the old fields) still replays through the aliases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer

from dpo3d.losses import BoundLoss, bind_losses, split_loss_args

from .common import console

LOSS_ARG = typer.Option(
    None, "--loss-arg",
    help="A loss option as KEY=VALUE (repeatable), e.g. --loss-arg beta=0.2 --loss-arg beta_rejected=0.02; in a "
    "mixture, part.key=value sets one part. `--list-losses` shows every loss's options and defaults.",
)  # fmt: skip

#: the per-loss flags of earlier releases, each the option of the same name; removed in the next release
DEPRECATED = ("beta", "beta_chosen", "beta_rejected", "sft_weight", "label_smoothing", "gamma", "dpop_lambda", "delta")


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _alias(key: str):
    return typer.Option(None, flag(key), hidden=True, help=f"Deprecated: --loss-arg {key}=VALUE.")


ALIASES_NOTE = (
    f"The per-loss flags of earlier releases ({', '.join(map(flag, DEPRECATED))}) still work in this release, "
    "with a warning; each sets the --loss-arg of its name."
)

BETA, BETA_CHOSEN, BETA_REJECTED, SFT_WEIGHT, LABEL_SMOOTHING, GAMMA, DPOP_LAMBDA, DELTA = map(_alias, DEPRECATED)


def list_losses_now(value: bool) -> None:
    """--list-losses is eager: it prints and exits before any other option is checked (no --out needed)."""
    if value:
        from .loss_listing import print_losses

        print_losses(console)
        raise typer.Exit()


LIST_LOSSES = typer.Option(
    False, "--list-losses", is_eager=True, callback=list_losses_now,
    help="Print the loss registry (formulas, options with their defaults, sources) and exit.",
)  # fmt: skip


def bind_cli_losses(params: dict[str, Any], names: Sequence[str]) -> list[BoundLoss]:
    """The losses ``names`` bound with ``params``' --loss-arg items and deprecated flags.

    An option none of the losses takes is an error naming what each takes (--loss-arg) or a warning
    (a deprecated flag, as before). ``params`` (the command's) is rewritten to hold the options as
    --loss-arg items only, so the run records (and replays) them that way.
    """
    given: dict[str, object] = dict(split_loss_args(params.get("loss_args") or []))
    old = {key: params[key] for key in DEPRECATED if params.get(key) is not None}
    for key, value in old.items():
        console.print(f"[yellow]warning:[/] {flag(key)} is deprecated and goes in the next release; "
                      f"use --loss-arg {key}={value:g}", highlight=False)  # fmt: skip
        if key in given:
            raise ValueError(f"loss option '{key}' given twice ({flag(key)} and --loss-arg)")
    losses = bind_losses(names, {**old, **given}, may_go_unused=set(old))
    unused = [key for key in old if not any(key in loss.options for loss in losses)]
    for key in unused:
        console.print(f"[yellow]warning:[/] {flag(key)} is used by none of: {', '.join(names)}", highlight=False)
    recorded = {key: value for key, value in {**old, **given}.items() if key not in unused}
    params["loss_args"] = [f"{key}={value}" for key, value in recorded.items()] or None
    params.update(dict.fromkeys(old))
    return losses
