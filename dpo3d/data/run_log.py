"""Append-only JSONL run logs (metrics, resumable outputs) that survive a killed process."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from dpo3d.data.records import RecordError, dumps


class AppendLog:
    """An append-only JSONL log (metrics, resumable outputs): one flushed line per record."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(self.path, "a", encoding="utf-8")

    def write(self, record: Mapping) -> None:
        self._out.write(dumps(record) + "\n")
        self._out.flush()

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_log(path: str | os.PathLike) -> list[dict]:
    """Read an append-only JSONL log written by a run that may have been killed.

    A torn final line (the process died mid-write) is dropped; a bad line anywhere
    else is real corruption and raises RecordError. A missing file is empty.
    """
    target = Path(path)
    if not target.is_file():
        return []
    lines = target.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number == len(lines):  # the last line, with no newline after it: torn by a crash
                break
            raise RecordError(str(path), number, "corrupt line in a run log") from None
        records.append(record)
    return records
