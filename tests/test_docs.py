"""The README stays short and the docs pages stay reachable: every relative link resolves,
every page under docs/ is linked from the README, and nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250

#: [text](target) and ![alt](target); the target may be <bracketed> and followed by a "title"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
EXTERNAL = ("http://", "https://", "mailto:")


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def link_targets(text: str) -> list[str]:
    """Every link and image target of a markdown text, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return [match.group(1).strip("<>") for match in LINK.finditer(text)]


def relative_targets(path: Path) -> list[tuple[str, Path]]:
    """(target as written, the file it names) for each relative link of a page, anchors stripped."""
    found = []
    for target in link_targets(path.read_text(encoding="utf-8")):
        if target.startswith(EXTERNAL) or target.startswith("#"):
            continue
        file_part = unquote(target.split("#", 1)[0])
        found.append((target, (path.parent / file_part).resolve()))
    return found


def test_the_helpers_find_links():
    # the checks below are only as good as the link finder: it must see links and images,
    # and not links shown as code
    text = "see [a](docs/a.md#x), ![f](docs/figures/f.png \"t\"), [w](https://x.org), `[c](no.md)`\n" "```\n[d](no2.md)\n```\n"
    assert link_targets(text) == ["docs/a.md#x", "docs/figures/f.png", "https://x.org"]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move the detail to a page under docs/"
    )


def test_docs_pages_exist():
    assert len(pages()) >= 8, [page.name for page in pages()]


@pytest.mark.parametrize("path", [README, *pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = [target for target, file in relative_targets(path) if not file.exists()]
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


@pytest.mark.parametrize("path", [README, *pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(path):
    outside = [target for target, file in relative_targets(path) if not file.is_relative_to(ROOT)]
    assert not outside, f"{path.relative_to(ROOT)}: links outside the repository: {outside}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {file for _, file in relative_targets(README)}
    missing = [page.name for page in pages() if page.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_readme_cites_no_file_outside_the_repository():
    text = README.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text, "README.md cites DESIGN.md, which is not in the repository"
