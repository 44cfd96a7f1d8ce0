"""Read the chinese-poetry npm package (MIT) into simplified-Chinese poems, for the data build.

The package is a tarball from the npm registry (``npm pack chinese-poetry@2.0.1``);
its JSON is read straight from the tarball. Traditional characters are converted
with OpenCC's t2s tables (the PyPI package opencc-python-reimplemented); a poem
whose text changes length in conversion, or that holds anything but Chinese
characters and punctuation (missing characters □, notes), is skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from opencc import OpenCC

from dpo3d.poetry.text import split_zh_rows
from dpo3d.poetry.tones import is_han

NPM_PACKAGE = "chinese-poetry"
NPM_VERSION = "2.0.1"
_ALLOWED = re.compile(r"^[，。！？；、：]$")
_T2S = OpenCC("t2s")


@dataclass
class Poem:
    id: str
    title: str
    author: str
    dynasty: str
    paragraphs: list[str]  # simplified, with the corpus's punctuation
    rows: list[str] = field(default_factory=list)
    tune: str | None = None
    tags: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.paragraphs)


def fetch_tarball(directory: Path) -> Path:
    """``npm pack`` the pinned package into ``directory`` (reuses a tarball already there)."""
    target = directory / f"{NPM_PACKAGE}-{NPM_VERSION}.tgz"
    if not target.exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", f"{NPM_PACKAGE}@{NPM_VERSION}"], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL)
    return target


def _members(tarball: Path, pattern: str) -> Iterator[list[dict]]:
    name_re = re.compile(pattern)
    with tarfile.open(tarball, "r:gz") as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and name_re.fullmatch(m.name)),
                         key=lambda m: m.name)
        for member in members:
            handle = archive.extractfile(member)
            assert handle is not None
            yield json.load(handle)


def _simplify(lines: list[str]) -> list[str] | None:
    out = []
    for line in lines:
        simple = _T2S.convert(line)
        if len(simple) != len(line):
            return None
        if not all(is_han(char) or _ALLOWED.match(char) for char in simple):
            return None
        out.append(simple)
    return out or None


def load_tang_poems(tarball: Path) -> list[Poem]:
    """全唐诗 from the package, simplified; poems that fail :func:`_simplify` are skipped."""
    poems = []
    for batch in _members(tarball, r"package/dist/quantangshi/poet\.tang\.\d+\.json"):
        for item in batch:
            paragraphs = _simplify(item.get("paragraphs") or [])
            title = _T2S.convert(item.get("title") or "").strip()
            if paragraphs is None:
                continue
            poems.append(Poem(
                id=item["id"], title=title, author=_T2S.convert(item.get("author") or ""), dynasty="唐",
                paragraphs=paragraphs, rows=split_zh_rows("".join(paragraphs)), tags=item.get("tags") or [],
            ))
    return poems


def load_song_ci(tarball: Path) -> list[Poem]:
    """全宋词 from the package (already simplified there). The tune (词牌) is the ``rhythmic`` field."""
    poems = []
    for batch in _members(tarball, r"package/dist/songci/ci\.song\.\d+\.json"):
        for item in batch:
            paragraphs = _simplify(item.get("paragraphs") or [])
            tune = (item.get("rhythmic") or "").strip()
            if paragraphs is None or not tune:
                continue
            key = f"{item.get('author', '')}|{tune}|{''.join(paragraphs)}"
            poems.append(Poem(
                id="songci-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16], title=tune, author=item.get("author") or "", dynasty="宋",
                paragraphs=paragraphs, rows=split_zh_rows("".join(paragraphs)), tune=tune,
            ))
    return poems
