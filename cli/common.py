"""What every subcommand shares: the stderr console, error handling, progress bars."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dpo3d.data.records import RecordError

#: the width of stderr when it is a file (a batch job's log), not a terminal: wide enough that no line is cut
LOG_WIDTH = 1000


def stderr_console() -> Console:
    """Everything for humans goes to stderr; stdout carries only JSONL. Text is printed as written (no
    ``:name:`` emoji); on a terminal rich fits it to the window, into a file no line is wrapped or cut."""
    # under `accelerate launch` every process runs the command: only the first one talks to the user
    quiet = os.environ.get("RANK", "0") != "0"
    found = Console(stderr=True, quiet=quiet, emoji=False)
    if found.is_terminal:
        return found
    # a file: rich would wrap at COLUMNS (often inherited from the shell that submitted the job) or 80
    return Console(stderr=True, quiet=quiet, emoji=False, width=LOG_WIDTH, soft_wrap=True)


console = stderr_console()

F = TypeVar("F", bound=Callable)


class UsageError(Exception):
    """A bad flag combination or argument value: shown as one line, exit code 2."""


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
