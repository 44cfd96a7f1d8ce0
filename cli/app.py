"""The `dpo3d` command: one Typer app, one small module per subcommand."""

from __future__ import annotations

import typer

from .common import show_warning, user_errors

app = typer.Typer(
    name="dpo3d",
    help=(
        "Preference optimisation of language models, with DPO's 3D-properties "
        "(Drastic drop, Degradation, Dispersion) measured in every run.\n\n"
        "Every subcommand reads and writes JSONL ('-' = stdin/stdout) or checkpoints, "
        "so they chain in shell pipelines. Human output (progress, tables) goes to stderr."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _print_version(wanted: bool) -> None:
    # an eager option's callback runs while the arguments are parsed, before a missing command is refused
    if wanted:
        from dpo3d import __version__

        typer.echo(f"dpo3d {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback behind a failure (also DPO3D_DEBUG=1).",
    ),
) -> None:
    """Preference optimisation with DPO's 3D-properties measured (see `dpo3d COMMAND --help`)."""
    if debug:
        import os

        os.environ["DPO3D_DEBUG"] = "1"


def _quiet_libraries() -> None:
    """Our own progress bars and tables go to stderr; silence the libraries' duplicates."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def _register() -> None:
    # one import per subcommand; each module exposes `command`
    from . import logprobs

    app.command("logprobs")(logprobs.command)
    from . import toy

    app.command("toy")(toy.command)

    from . import sample

    app.command("sample")(sample.command)

    from . import build_pairs, datasets, judge

    app.command("datasets")(datasets.command)
    app.add_typer(judge.app, name="judge")
    app.command("build-pairs")(build_pairs.command)

    from . import edit_pairs

    app.command("edit-pairs")(edit_pairs.command)

    from . import train_dpo

    app.command("train-dpo")(train_dpo.command)

    from . import sft

    app.command("sft")(sft.command)

    from . import train_rm

    app.command("train-rm")(train_rm.command)

    from . import eval_math, eval_poem

    app.command("eval-math")(eval_math.command)
    app.command("eval-poem")(eval_poem.command)

    from . import ppo

    app.command("ppo")(ppo.command)

    from . import compare

    app.command("compare")(compare.command)

    from . import diagnose

    app.command("diagnose")(diagnose.command)

    from . import study

    app.command("study")(study.command)

    from . import iterate

    app.command("iterate")(iterate.command)


def _guard(typer_app: typer.Typer) -> None:
    """Every command, the judge group's included, behind the one error boundary (common.user_errors)."""
    for info in typer_app.registered_commands:
        if not getattr(info.callback, "guarded", False):
            info.callback = user_errors(info.callback)
            info.callback.guarded = True
    for group in typer_app.registered_groups:
        _guard(group.typer_instance)


def _terminate_as_interrupt() -> None:
    """SIGTERM (a batch scheduler's cancel, `kill`) ends a command the way Ctrl-C does: outputs are left
    untouched or whole and the error boundary says what was kept and how to go on."""
    import signal
    import threading

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupted)


_quiet_libraries()
_register()
_guard(app)


def main() -> None:
    import warnings

    warnings.showwarning = show_warning
    _terminate_as_interrupt()
    try:
        app()
    except KeyboardInterrupt:  # one that reached past the error boundary (while typer unwinds): still an interrupt
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
