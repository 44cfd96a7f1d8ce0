"""What every subcommand shares: the stderr console, error handling, progress bars."""

from __future__ import annotations

import functools
import importlib
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
from rich.text import Text

from dpo3d.data.faults import Fault, check_output_file, check_output_folder, os_error_text
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


def debugging() -> bool:
    """``dpo3d --debug`` or ``DPO3D_DEBUG=1``: show the traceback behind a failure."""
    return os.environ.get("DPO3D_DEBUG", "") not in ("", "0")


def _show_traceback() -> None:
    if debugging():
        console.print_exception()


#: the click context's meta key under which options.output notes a command's output locations
OUTPUTS = "dpo3d_outputs"


def _click_module(name: str):
    """A module of the click that typer runs on: recent typer carries its own copy (``typer._click``),
    earlier releases use the ``click`` package."""
    package = next(c for c in typer.Context.__mro__ if c.__name__ == "Context" and c.__module__.endswith(".core"))
    return importlib.import_module(package.__module__.rsplit(".", 1)[0] + "." + name)


#: click's exceptions (a usage error raised by a command, Exit, Abort) pass the boundary as they are
CLICK_EXCEPTION = _click_module("exceptions").ClickException


def check_outputs() -> None:
    """Refuse, before the command starts its work, an output location it could not write (a folder where
    a file belongs, a file where a folder belongs, a folder that takes no new files): ``--out`` of every
    command, eval-*'s ``--summary``, diagnose's ``--table``/``--figure``."""
    ctx = _click_module("globals").get_current_context(silent=True)
    for kind, flag, value in (ctx.meta.get(OUTPUTS, []) if ctx is not None else []):
        (check_output_file if kind == "file" else check_output_folder)(value, flag)


def user_errors(fn: F) -> F:
    """The command layer's one error boundary (app.py wraps every command in it).

    A failure the user can act on (a bad record or value, a missing, unwritable or corrupt file, a full
    disk) is one line naming the file and the remedy, exit code 2; an interrupt (Ctrl-C, SIGTERM) says so,
    exit 130; anything else is a bug in dpo3d: one line, exit code 1, the traceback with ``--debug``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            check_outputs()
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, CLICK_EXCEPTION):
            raise
        except BrokenPipeError:
            # `dpo3d ... | head`: the reader left; not an error
            sys.stderr.close()
            raise typer.Exit(0) from None
        except (RecordError, UsageError, Fault, FileNotFoundError, ValueError) as err:
            # library ValueErrors name a bad value the user gave (unknown loss, bad hyper-parameter)
            _show_traceback()
            fail(str(err))
        except OSError as err:
            _show_traceback()
            fail(os_error_text(err))
        except KeyboardInterrupt as err:
            _show_traceback()
            said = str(err) or "stopped before it finished; no output was published"
            fail(f"interrupted: {said}", code=130)
        except Exception as err:  # noqa: BLE001 - the boundary: a bug is reported, not a traceback dump
            if debugging():
                raise
            first = str(err).splitlines()[0] if str(err) else ""
            fail(
                f"internal error ({type(err).__name__}{': ' + first if first else ''}); this is a bug in dpo3d: "
                "rerun with --debug (or DPO3D_DEBUG=1) for the traceback and report it",
                code=1,
            )

    return wrapper  # type: ignore[return-value]


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The library's warnings (a dropped cache entry, a repaired log) as one line on stderr, not Python's two
    (the file and line of the library's ``warnings.warn`` mean nothing to a user)."""
    console.print(Text.assemble(("warning", "bold yellow"), " ", str(message)), highlight=False, soft_wrap=True)


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
