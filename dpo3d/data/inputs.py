"""The one input layer: every data source a subcommand reads, as ``(position, record)``.

A source is named by one string:

- a JSONL file or ``-`` (stdin), streamed line by line (jsonlines; see :mod:`dpo3d.data.records`);
- a ``.json`` (array or JSON lines), ``.parquet``, ``.arrow``/``.feather`` or ``.csv`` file;
- a folder written by ``Dataset.save_to_disk`` (``DIR:split`` picks a split of a DatasetDict),
  or a folder of Parquet shards (as a hub repository lays them out);
- a hub dataset id ``org/name`` with an optional ``:split`` (``subset`` picks the config);
  offline it fails with one line naming the id and ``HF_HUB_OFFLINE``.

Built-in dataset names (``gsm8k:train``, ...) are prompt sources: :mod:`dpo3d.data.datasets` resolves
them and reads everything else through here.

Tables are read with pyarrow (🤗 datasets for dataset folders, ``.json`` and the hub) and turned
into Python dicts one record batch at a time, so a large file is copied into Python once, lazily.
Positions are 1-based line numbers for text files and 0-based :class:`~dpo3d.data.records.Row` indices
for tables; :class:`~dpo3d.data.records.RecordError` prints each the way a user finds it.
No torch here.
"""

from __future__ import annotations

import itertools
import mmap
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo3d.data import records as rec
from dpo3d.data.records import STDIO, RecordError
from dpo3d.data.table_readers import (
    dataset_table,
    load_from_disk,
    load_hub,
    load_json,
    read_table,
    refuse_nan,
    table_rows,
)

#: file formats by suffix
SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
    ".arrow": "arrow", ".feather": "arrow", ".csv": "csv",
}
ACCEPTED = (
    "accepted: JSONL (.jsonl, or '-' for stdin), .json, .parquet, .arrow, .csv, "
    "a save_to_disk or Parquet-shard folder, a hub id org/name[:split]"
)
#: what a binary file's first bytes say it is
_MAGIC = ((b"PAR1", "a Parquet file"), (b"ARROW1", "an Arrow file"), (b"\xff\xff\xff\xff", "an Arrow stream"),
          (b"\x1f\x8b", "a gzip file"), (b"PK\x03\x04", "a zip file"))
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Check = Callable[[dict, str, int], "dict | None"]


def parse_columns(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"prompt=question,chosen=good"`` -> ``{"prompt": "question", "chosen": "good"}`` (target=source)."""
    if text is None or isinstance(text, Mapping):
        return dict(text or {})
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        target, sep, source = item.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise ValueError(f"--columns takes FIELD=COLUMN pairs, e.g. prompt=question,chosen=good; got '{item}'")
        mapping[target.strip()] = source.strip()
    return mapping


@dataclass(frozen=True)
class DataSpec:
    """A source as a command's options give it: the name, a hub config (``--subset``) and a column
    mapping (``--columns``, target field -> the source's column). ``str()`` is the name."""

    source: str
    subset: str | None = None
    columns: Mapping[str, str] | None = None

    def __str__(self) -> str:
        return self.source

    def options(self) -> dict:
        """What a run records beside the source's name: its ``subset`` and ``columns``."""
        return {"subset": self.subset, "columns": dict(self.columns) if self.columns else None}

    @classmethod
    def of(cls, spec: str | os.PathLike | DataSpec, subset: str | None = None, columns: str | Mapping | None = None) -> DataSpec:
        if isinstance(spec, DataSpec):
            return spec
        return cls(str(spec), subset, parse_columns(columns) or None)


@dataclass
class Source:
    """One opened data source. Iterate it for ``(position, record)``; ``len()`` is known for tables."""

    name: str  # as messages show it
    stem: str  # what default ids and labels are made of
    kind: str  # jsonl, table
    _rows: Callable[[], Iterator[tuple[int, dict]]]
    size: int | None = None
    columns: Mapping[str, str] | None = None

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        mapping = self.columns or {}
        for position, record in self._rows():
            if mapping:
                record = _renamed(record, mapping, self.name, position)
            yield position, record

    def default_id(self, position: int) -> str:
        """The id a record without one gets: ``<stem>-<line>`` or ``<stem>-<row>``."""
        return f"{self.stem}-{int(position)}"


def _renamed(record: dict, mapping: Mapping[str, str], name: str, position: int) -> dict:
    missing = [column for column in mapping.values() if column not in record]
    if missing:
        raise RecordError(name, position, f"--columns: no field '{missing[0]}' (fields: {', '.join(record)})")
    moved = set(mapping) | set(mapping.values())
    renamed = {key: value for key, value in record.items() if key not in moved}
    renamed.update({target: record[column] for target, column in mapping.items()})
    return renamed


# --------------------------------------------------------------------------- opening


def open_source(spec: str | os.PathLike | DataSpec, *, subset: str | None = None, columns: str | Mapping | None = None) -> Source:
    """The source ``spec`` names (see the module docstring); raises RecordError for a missing or
    unreadable one, naming what it is and what is accepted."""
    spec = DataSpec.of(spec, subset, columns)
    text, subset, mapping = spec.source, spec.subset, dict(spec.columns or {})
    if text == STDIO:
        return Source(rec.display_name(STDIO), "stdin", "jsonl", lambda: _jsonl_rows(STDIO), columns=mapping)
    path, split = _split_suffix(text)
    if path.is_dir():
        return _folder(path, text, split, mapping)
    if path.is_file():
        if split is not None:
            raise RecordError(text, None, "a ':split' goes with a dataset folder or a hub id, not a file")
        return _file(path, mapping)
    suffix = Path(text).suffix.lower()
    if suffix in SUFFIXES or text.startswith((".", "/", "~")) or not _HUB_ID.match(path.as_posix()):
        raise RecordError(text, None, "no such file or folder")
    return _hub(path.as_posix(), split, subset, text, mapping)


def _split_suffix(text: str) -> tuple[Path, str | None]:
    """``DIR:test`` / ``org/name:test`` -> (``DIR``, ``test``); a path that exists keeps its colon."""
    if Path(text).exists():
        return Path(text), None
    head, sep, tail = text.rpartition(":")
    if sep and head and re.fullmatch(r"[\w.-]+", tail):
        return Path(head), tail
    return Path(text), None


def _file(path: Path, mapping: dict) -> Source:
    suffix = path.suffix.lower()
    kind = SUFFIXES.get(suffix, "jsonl" if suffix == "" else None)
    name = str(path)
    if kind is None:
        raise RecordError(name, None, f"unknown format '{suffix}' ({ACCEPTED})")
    if kind == "jsonl":
        _refuse_binary(path, name)
        return Source(name, path.stem, "jsonl", lambda: _jsonl_rows(path), columns=mapping)
    if kind == "json":
        _refuse_lone_surrogates(path, name)
        return _dataset_source(lambda: load_json(path, name), name, path.stem, mapping)
    return _table_source(lambda: read_table(path, kind, name), name, path.stem, mapping)


def _refuse_binary(path: Path, name: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    what = next((label for magic, label in _MAGIC if head.startswith(magic)), None)
    if what is None and b"\x00" in head:
        what = "a binary file"
    if what is not None:
        raise RecordError(name, None, f"this is {what}, not JSONL text ({ACCEPTED}; name a table by its suffix)")


#: a JSON escape of a lone UTF-16 surrogate: a high one not followed by a low one, a low one not after a high one
_LONE_SURROGATE_ESCAPE = re.compile(
    rb"\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|[c-fC-F][0-9a-fA-F]{2}(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}))")


def _refuse_lone_surrogates(path: Path, name: str) -> None:
    """A ``.json`` file's reader turns a lone surrogate escape into other text without a word: refuse the
    file instead, naming the line (a surrogate pair is one character and passes). JSONL lines are checked
    as they are parsed (:mod:`dpo3d.data.records`)."""
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for found in _LONE_SURROGATE_ESCAPE.finditer(data):
            start = found.start()
            before = data[max(0, start - 64) : start]
            if (len(before) - len(before.rstrip(b"\\"))) % 2:  # an escaped backslash, then "uD800": text, not an escape
                continue
            line = data[:start].count(b"\n") + 1
            raise RecordError(name, line, f"a lone surrogate ({found.group().decode()}, a \\uD800-\\uDFFF escape without "
                                          "its pair) is not Unicode text: fix or drop the escape")


def _jsonl_rows(path) -> Iterator[tuple[int, dict]]:
    if str(path) == STDIO:
        import sys

        peek = getattr(sys.stdin.buffer, "peek", None)
        head = peek(4096)[:4096] if peek is not None else b""
        what = next((label for magic, label in _MAGIC if head.startswith(magic)), None)
        if what is not None:
            raise RecordError(rec.display_name(STDIO), None, f"this is {what}, not JSONL text: give it as a file ({ACCEPTED})")
    yield from rec.iter_records(path)


def _folder(path: Path, text: str, split: str | None, mapping: dict) -> Source:
    if any((path / marker).is_file() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return _dataset_source(lambda: load_from_disk(path, split, text), text, path.name, mapping)
    shards = sorted(path.glob("*.parquet")) or sorted(path.glob("**/*.parquet"))
    if split is not None:
        shards = [shard for shard in shards if split in shard.relative_to(path).as_posix()]
    if not shards:
        raise RecordError(text, None, f"this folder holds neither a dataset saved with save_to_disk nor Parquet shards ({ACCEPTED})")
    return _table_source(lambda: read_table(shards, "parquet", text), text, path.name, mapping)


def _hub(repo: str, split: str | None, subset: str | None, text: str, mapping: dict) -> Source:
    return _dataset_source(lambda: load_hub(repo, split, subset, text), text, repo.split("/")[-1], mapping)


# --------------------------------------------------------------------------- tables


def _table_source(load: Callable[[], Any], name: str, stem: str, mapping: dict) -> Source:
    """A source over a pyarrow Table (read at once, memory-mapped where it can be)."""
    table = load()
    refuse_nan(table, name)
    return Source(name, stem, "table", lambda: table_rows(table), size=table.num_rows, columns=mapping)


def _dataset_source(load: Callable[[], Any], name: str, stem: str, mapping: dict) -> Source:
    dataset = load()
    return _table_source(lambda: dataset_table(dataset), name, stem, mapping)


# --------------------------------------------------------------------------- reading through a check


def stream(source: Source, check: Check | None = None, *, ids: bool = False, allow_empty: bool = False) -> Iterator[dict]:
    """Each record of ``source``, given an ``id`` when ``ids`` (see :func:`with_id`), then passed
    through ``check(record, name, position)``, which raises RecordError or returns a replacement
    record. Empty input raises once the source is spent."""
    count = 0
    for position, record in source:
        if ids:
            record = with_id(record, source, position)
        if check is not None:
            replaced = check(record, source.name, position)
            record = record if replaced is None else replaced
        count += 1
        yield record
    if not count and not allow_empty:
        raise RecordError(source.name, None, "empty input: no records")


def read(
    spec: str | os.PathLike | DataSpec | Source,
    check: Check | None = None,
    *,
    ids: bool = False,
    allow_empty: bool = False,
    subset: str | None = None,
    columns: str | Mapping | None = None,
) -> list[dict]:
    """Every record of a source (a spec or an opened :class:`Source`), checked; see :func:`stream`."""
    source = spec if isinstance(spec, Source) else open_source(spec, subset=subset, columns=columns)
    return list(stream(source, check, ids=ids, allow_empty=allow_empty))


def with_id(record: dict, source: Source, position: int) -> dict:
    """The record with its ``id`` as a string (TRL data has none: ``<stem>-<position>`` then)."""
    if record.get("id") is None:
        return {**record, "id": source.default_id(position)}
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError(source.name, position, "field 'id' should be a string")
    return record if isinstance(value, str) else {**record, "id": str(value)}


def chunks(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive lists of at most ``size`` records: how streaming stages batch work."""
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
