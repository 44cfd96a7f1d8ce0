"""How every training command ends a run that fails or is interrupted (cli/training_options.running)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from rich.console import Console

from dpo3d.training.run_folder import NonFiniteLoss
from dpo3d_cli import training_options as t


def display() -> t.LiveDisplay:
    return t.LiveDisplay(("loss",), to=Console(file=open("/dev/null", "w"), force_terminal=False))


def test_a_non_finite_loss_is_one_line_and_exit_1(capsys):
    with pytest.raises(typer.Exit) as ended:
        with t.running(display()):
            raise NonFiniteLoss("loss became non-finite at step 3")
    assert ended.value.exit_code == 1
    assert "error: loss became non-finite at step 3" in capsys.readouterr().err


def test_ctrl_c_says_how_to_continue_only_where_a_rerun_continues(capsys):
    with pytest.raises(typer.Exit) as ended:
        with t.running(display(), rerun_to_continue=Path("runs/study")):
            raise KeyboardInterrupt
    assert ended.value.exit_code == 130
    assert "interrupted: rerun the same command to continue in runs/study" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):  # a plain trainer: --resume continues it; the interrupt goes on as it is
        with t.running(display()):
            raise KeyboardInterrupt
