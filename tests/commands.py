"""`dpo3d ARGS` for tests, run in this process: the command layer as a user's shell reaches it (the app, its
error boundary, stdout and stderr apart), without the ~4 s a new Python process spends importing torch and
transformers. Tests whose subject is the process itself (a kill -9, a signal, `accelerate launch`, a shell
pipe) start a real one instead."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from dpo3d_cli.app import app

ROOT = Path(__file__).resolve().parents[1]


def dpo3d(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``dpo3d ARGS`` from the repository root; the result reads like ``subprocess.run``'s
    (``returncode``, ``stdout``, ``stderr``). ``env``: variables set for the run only."""
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        result = CliRunner().invoke(app, [str(arg) for arg in args], env=env)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["dpo3d", *args], result.exit_code, result.stdout, result.stderr)
