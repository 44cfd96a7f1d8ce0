"""Append-only JSONL run logs (metrics, resumable outputs) that survive a killed process."""

from __future__ import annotations

import json
import os
import warnings
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


class _NotANumber(ValueError):
    """NaN or Infinity in a line: Python's json reads them, but no run log writes them (``dumps`` refuses)."""


def _refuse_constant(name: str):
    raise _NotANumber(name)


def read_log(path: str | os.PathLike) -> list[dict]:
    """Read an append-only JSONL log written by a run that may have been killed.

    A torn final line (the process died mid-write: no newline after it) is dropped with a warning that
    names the file and line; a bad line anywhere else (not JSON, not an object, NaN or Infinity, nested
    past what the parser takes) is corruption and raises RecordError naming the file and line. A missing
    file is empty.
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
            record = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
        except _NotANumber as err:
            raise RecordError(str(path), number, f"holds {err}, which no run log writes (the file was edited or "
                              "damaged): fix or delete that line") from None
        except RecursionError:
            raise RecordError(str(path), number, "nested too deep to be a run log record (the file is damaged): "
                              "fix or delete that line") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if number == len(lines):  # the last line, with no newline after it: torn by a crash
                warnings.warn(f"{path}:{number}: the last line is torn (the run was killed while writing it); "
                              "read the log without it", stacklevel=2)
                break
            problem = err.reason if isinstance(err, UnicodeDecodeError) else err.msg
            raise RecordError(str(path), number, f"corrupt line in a run log ({problem}): fix or delete that "
                              "line") from None
        if not isinstance(record, dict):
            raise RecordError(str(path), number, f"a run log line must be a JSON object, found a {type(record).__name__}"
                              " (the file is damaged): fix or delete that line")
        records.append(record)
    return records
