"""Layering rules: the library never imports the command layer; its stage packages import only
from their own or a lower stage (LAYERS, stated once here) and never in a cycle, lazy imports
inside functions included; and the light modules (records, judges, poetry, pairs, datasets)
never import torch."""

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
NO_TORCH_GLOBS = [
    "data/records.py", "data/schema.py", "data/inputs.py", "data/formats.py", "data/datasets.py", "pairs/building.py",
    "judges/base.py", "judges/math_judge.py", "judges/llm_judge.py", "judges/reply_cache.py", "judges/api_errors.py",
    "judges/intervals.py", "judges/rubric.py", "judges/rules.py",
    "judges/reward.py", "poetry/**/*.py",
]

#: the library's stages, lowest first: a module may import from its own stage or a lower one.
#: The package's own __init__ and __main__ stand above every stage.
LAYERS = [
    {"config"},
    {"data"},
    {"models"},
    {"scoring"},
    {"generation"},
    {"poetry"},
    {"judges"},
    {"pairs"},
    {"losses"},
    {"watch"},
    {"training"},
    {"toy", "study", "iterate"},
    {"integrations"},
]


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
    assert {"dpo3d.data.records", "dpo3d.data.inputs", "dpo3d.data.formats", "dpo3d.training.loop", "dpo3d.losses.registry"} <= names
    assert {"dpo3d.data.records", "dpo3d.pairs.building", "dpo3d.judges.rubric", "dpo3d.poetry.scoring"} <= set(
        no_torch_modules()
    )


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


def library_imports(root: Path, package: str = "dpo3d") -> dict[str, set[str]]:
    """For every module of ``package`` under ``root``: the package's modules it imports, at the top or
    inside a function. ``from pkg import name`` counts as importing ``pkg.name`` when that is a module."""
    base = root / package
    modules = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    graph = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = here[: len(here) - (node.level - 1)]
                    target = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                           for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(module: str) -> int:
    """The stage of a library module: its LAYERS index; the package's own top-level files rank above all."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in {"__main__"}:
        return len(LAYERS)
    for rank, stage in enumerate(LAYERS):
        if parts[1] in stage:
            return rank
    raise AssertionError(f"{module} lies in no stage of LAYERS: add its package to the list in tests/test_layers.py")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{src} ({'/'.join(sorted(LAYERS[layer_of(src)]))}) imports {dst} ({'/'.join(sorted(LAYERS[layer_of(dst)]))})"
        for src, dsts in graph.items() if src != "dpo3d"
        for dst in dsts if dst != "dpo3d" and layer_of(dst) > layer_of(src)
    )


def test_the_library_has_no_import_cycle():
    cycles = import_cycles(library_imports(ROOT))
    assert not cycles, "import cycles (lazy imports inside functions count too):\n" + "\n".join(map(str, cycles))


def test_no_stage_imports_a_higher_stage():
    bad = upward_imports(library_imports(ROOT))
    assert not bad, "stages import only their own or a lower stage (LAYERS in tests/test_layers.py):\n" + "\n".join(bad)


def test_every_library_package_lies_in_a_stage():
    for module in library_imports(ROOT):
        layer_of(module)


def _write_package(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / "dpo3d" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checks_catch_a_lazy_cycle_and_an_upward_import(tmp_path):
    _write_package(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/records.py": "def f():\n    from ..training import loop\n",  # upward, and lazy
        "training/__init__.py": "",
        "training/loop.py": "from dpo3d.data.records import f\n",
        "models/__init__.py": "",
        "models/a.py": "from . import b\n",
        "models/b.py": "import dpo3d.models.a\n",
    })
    graph = library_imports(tmp_path)
    assert graph["dpo3d.data.records"] == {"dpo3d.training.loop"}
    assert graph["dpo3d.models.a"] == {"dpo3d.models.b"}
    assert import_cycles(graph) == [
        ["dpo3d.data.records", "dpo3d.training.loop"],
        ["dpo3d.models.a", "dpo3d.models.b"],
    ]
    assert upward_imports(graph) == ["dpo3d.data.records (data) imports dpo3d.training.loop (training)"]
