"""What every subcommand shares: the stderr console, error handling, progress bars."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dpo3d.data.records import RecordError

#: everything for humans goes to stderr; stdout carries only JSONL
# under `accelerate launch` every process runs the command: only the first one talks to the user
console = Console(stderr=True, quiet=os.environ.get("RANK", "0") != "0")

F = TypeVar("F", bound=Callable)


class UsageError(Exception):
    """A bad flag combination or argument value: shown as one line, exit code 2."""


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn: F) -> F:
    """Turn a user's mistake (bad record, bad value, missing file) into one line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RecordError as err:
            fail(str(err))
        except (UsageError, FileNotFoundError) as err:
            fail(str(err))
        except ValueError as err:
            # library ValueErrors name a bad value the user gave (unknown loss, bad hyper-parameter)
            fail(str(err))
        except BrokenPipeError:
            # `dpo3d ... | head`: the reader left; not an error
            sys.stderr.close()
            raise typer.Exit(0) from None

    return wrapper  # type: ignore[return-value]


def progress(transient: bool = False) -> Progress:
    """The suite's progress bar on stderr."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
