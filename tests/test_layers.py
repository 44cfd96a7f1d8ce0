"""Layering rules: the library never imports the command layer, and the light modules
(records, judges, poetry, pairs, datasets) never import torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "dpo3d"
COMMAND_LAYER = {"typer", "rich", "click", "cli", "dpo3d_cli"}

#: modules that must import without torch; globs so the list grows as modules appear
NO_TORCH_GLOBS = ["records.py", "inputs.py", "formats.py", "pairs.py", "datasets.py", "judges/**/*.py", "poetry/**/*.py"]


def library_files() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file (anywhere, including inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def no_torch_modules() -> list[str]:
    found = {module_name(path) for pattern in NO_TORCH_GLOBS for path in LIBRARY.glob(pattern)}
    return sorted(found)


def test_the_library_exists():
    names = {module_name(path) for path in library_files()}
    # the rules below only see what library_files() finds: it must find the modules that matter
    assert {"dpo3d.records", "dpo3d.inputs", "dpo3d.formats", "dpo3d.training.loop", "dpo3d.losses.registry"} <= names
    assert {"dpo3d.records", "dpo3d.pairs", "dpo3d.datasets", "dpo3d.judges.rubric", "dpo3d.poetry.scoring"} <= set(no_torch_modules())


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_does_not_import_the_command_layer(path):
    bad = imported_roots(path) & COMMAND_LAYER
    assert not bad, (
        f"{path.relative_to(ROOT)} imports {sorted(bad)}: the library must not depend on the CLI layer"
    )


def test_the_import_scanner_sees_every_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import typer\nimport rich.console as rc\nfrom click import echo\nfrom dpo3d_cli.app import main\n"
        "def f():\n    from cli import app\nfrom . import sibling\n",
        encoding="utf-8",
    )
    assert imported_roots(probe) == {"typer", "rich", "click", "dpo3d_cli", "cli"}


@pytest.mark.parametrize("module", no_torch_modules())
def test_light_modules_do_not_import_torch(module):
    code = f"import sys; import {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"importing {module} pulled in torch (or failed):\n{result.stderr[-2000:]}"


def test_every_library_package_is_installed_by_a_wheel():
    """pyproject lists packages by hand (cli/ installs as dpo3d_cli); a sub-package missing from that list works in
    an editable checkout and is absent from a wheel, so `import dpo3d.<it>` fails for anyone who pip-installs."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 reads TOML without a dependency
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in LIBRARY.rglob("__init__.py")}
    assert on_disk - listed == set()
