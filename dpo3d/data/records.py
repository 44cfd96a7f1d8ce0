"""JSONL records: read, validate and write them, from files or `-` (stdin/stdout).

Records are plain dicts; fields a stage does not know pass through untouched.
Bad input raises :class:`RecordError`, which names the file, the line and the
problem in one line; the command layer turns it into exit code 2.
Writers go to a temporary file beside the target and rename it at the end, so
an interrupted or failed stage never leaves a half-written output file.
No torch here: the records layer is imported by every stage.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

import jsonlines

from .faults import remove_stale_temps, temp_prefix


class RecordCheck(Protocol):
    """What reading validates records with: a :class:`dpo3d.data.schema.Schema` (which raises this module's
    RecordError, so this module does not import it)."""

    def check(self, record: Mapping, source: str = "<input>", line: int | None = None) -> None: ...

STDIO = "-"


#: the deepest nesting of arrays and objects a record may have (a chat record needs 3); deeper input is refused
#: with its file and line, before Python's recursion limit (json's decoder, json.dumps, any walk) is reached
MAX_NESTING = 100

#: a JSON escape of a UTF-16 surrogate: the only way a record's text can hold one
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NonFiniteNumber(ValueError):
    pass


class _TooDeep(ValueError):
    pass


class _LoneSurrogate(ValueError):
    pass


def _refuse_constant(token: str):
    # Python's json accepts NaN/Infinity, which are not JSON: another tool would choke on them later
    raise _NonFiniteNumber(token)


def _too_deep(value: Any) -> bool:
    """Whether arrays and objects nest deeper than MAX_NESTING in ``value`` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_NESTING:
                    return True
                stack.append((child, depth + 1))
    return False


def _surrogate_field(value: Any) -> str | None:
    """The top-level field whose text holds a lone surrogate (a surrogate pair decodes to one character)."""
    for field, item in (value.items() if isinstance(value, dict) else [("", value)]):
        stack = [item]
        while stack:
            part = stack.pop()
            if isinstance(part, str):
                if _SURROGATE.search(part):
                    return field
            elif isinstance(part, dict):
                stack.extend(part.keys())
                stack.extend(part.values())
            elif isinstance(part, list):
                stack.extend(part)
        if isinstance(field, str) and _SURROGATE.search(field):
            return field.encode("utf-8", "backslashreplace").decode()
    return None


def _strict_loads(text: str):
    """json.loads refusing NaN/Infinity, nesting deeper than MAX_NESTING and lone surrogates (ValueErrors
    that name the problem). The checks past parsing run only where the line's text says they may find one."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _TooDeep(f"nested deeper than {MAX_NESTING} levels of arrays and objects") from None
    if text.count("[") + text.count("{") > MAX_NESTING and _too_deep(value):
        raise _TooDeep(f"nested deeper than {MAX_NESTING} levels of arrays and objects")
    if _SURROGATE_ESCAPE.search(text) and (field := _surrogate_field(value)) is not None:
        raise _LoneSurrogate(field)
    return value


def _publish(tmp_name: str, target: Path) -> None:
    """Give the temp file the mode a plain open() would (mkstemp makes it 0600), then rename it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    os.replace(tmp_name, target)


@contextmanager
def temp_beside(target: Path) -> Iterator[tuple[int, str]]:
    """An open temp file beside ``target`` (its descriptor and name), renamed onto it when the body
    succeeds and removed when it raises, so the target is either untouched or whole. Leftovers of
    earlier writers killed mid-write are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    handle, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        yield handle, tmp_name
        _publish(tmp_name, target)
    except OSError as err:
        Path(tmp_name).unlink(missing_ok=True)
        if err.filename in (None, tmp_name):  # a failed write or rename is about the target, not our temp name
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class Row(int):
    """A row of a table (Parquet, Arrow, CSV, a dataset folder), 0-based like ``dataset[12]``.

    A plain ``int`` position is a 1-based line of a text file; errors print the two differently
    (``pairs.jsonl:12: ...`` and ``pairs.parquet: row 12: ...``).
    """


def position_text(position: int) -> str:
    """``line 3`` for a text file's line, ``row 3`` for a table's :class:`Row`."""
    return f"row {int(position)}" if isinstance(position, Row) else f"line {position}"


class RecordError(ValueError):
    """A user's input is wrong. ``str()`` is the one line to show them."""

    def __init__(self, source: str, line: int | None, problem: str):
        self.source = source
        self.line = line
        self.problem = problem
        if line is None:
            where = source
        elif isinstance(line, Row):
            where = f"{source}: row {int(line)}"
        else:
            where = f"{source}:{line}"
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------- reading JSONL


def display_name(path: str | os.PathLike) -> str:
    """How a source is named in messages: ``<stdin>`` for ``-``, else the path as given."""
    return "<stdin>" if str(path) == STDIO else str(path)


def _line_problem(err: jsonlines.InvalidLineError) -> str:
    cause = err.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"not valid UTF-8 (byte {cause.start})"
    if isinstance(cause, _NonFiniteNumber):
        return f"{cause} is not valid JSON (write null for a missing number)"
    if isinstance(cause, _TooDeep):
        return f"{cause}: not a record (a record's fields nest a few levels)"
    if isinstance(cause, _LoneSurrogate):
        where = f"field '{cause}'" if str(cause) else "the line"
        return (f"{where} holds a lone surrogate (a \\uD800-\\uDFFF escape without its pair), which is not Unicode "
                "text: fix or drop the escape")
    if isinstance(cause, json.JSONDecodeError):
        return f"malformed JSON: {cause.msg} (column {cause.colno})"
    if "null" in str(err):
        return "expected a JSON object, got null"
    return str(err)


def iter_records(path: str | os.PathLike = STDIO, stream: BinaryIO | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of a JSONL file, as it is read.

    ``path`` may be ``-`` for stdin (or pass an already open binary ``stream``). Parsing is
    jsonlines' with a JSON decoder that refuses NaN/Infinity. Raises RecordError on non-UTF-8
    bytes, malformed JSON or a line that is not an object, naming the file and the line.
    """
    name = display_name(path)
    if stream is None and str(path) != STDIO and not Path(path).is_file():
        raise RecordError(name, None, "no such file")
    raw = stream if stream is not None else (sys.stdin.buffer if str(path) == STDIO else open(path, "rb"))
    current = [0]

    def numbered_lines():
        for number, line in enumerate(raw, start=1):
            current[0] = number
            yield line

    reader = jsonlines.Reader(numbered_lines(), loads=_strict_loads)
    try:
        while True:
            try:
                record = reader.read(skip_empty=True)
            except EOFError:
                return
            except jsonlines.InvalidLineError as err:
                raise RecordError(name, err.lineno, _line_problem(err)) from None
            if not isinstance(record, dict):
                raise RecordError(name, current[0], f"expected a JSON object, got {type(record).__name__}")
            yield current[0], record
    finally:
        if stream is None and raw is not sys.stdin.buffer:
            raw.close()


def read_records(
    path: str | os.PathLike = STDIO,
    schema: RecordCheck | None = None,
    allow_empty: bool = False,
) -> list[dict]:
    """Every record of a JSONL file, validated against ``schema``; empty input is an error.

    Subcommands read through :mod:`dpo3d.data.inputs` (any format); this is the JSONL-only core.
    """
    records = []
    for number, record in iter_records(path):
        if schema is not None:
            schema.check(record, display_name(path), number)
        records.append(record)
    if not records and not allow_empty:
        raise RecordError(display_name(path), None, "empty input: no records")
    return records


# --------------------------------------------------------------------------- writing


def dumps(record: Mapping) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


@contextmanager
def open_output(path: str | os.PathLike = STDIO) -> Iterator[TextIO]:
    """A text stream for JSONL output: stdout for ``-``, else a temp file renamed on success.

    If the body raises, the temporary file is removed and the target is untouched.
    """
    if str(path) == STDIO:
        out = sys.stdout
        yield out
        out.flush()
        return
    with temp_beside(Path(path)) as (handle, _):
        with open(handle, "w", encoding="utf-8", newline="\n") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())


def write_records(records: Iterable[Mapping], path: str | os.PathLike = STDIO) -> int:
    """Write records atomically (see open_output); returns how many were written.

    JSONL is the pipeline format; a path ending in ``.parquet`` writes one Parquet file instead.
    """
    if str(path) != STDIO and Path(path).suffix.lower() == ".parquet":
        return _write_parquet(records, Path(path))
    count = 0
    with open_output(path) as out:
        for record in records:
            out.write(dumps(record) + "\n")
            count += 1
    return count


def _write_parquet(records: Iterable[Mapping], target: Path) -> int:
    """All records as one Parquet table, its schema inferred over every record (not only the
    first), written to a temp file and renamed like JSONL output."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(record) for record in records]
    if not rows:
        raise ValueError(f"{target}: nothing to write (Parquet needs at least one record)")
    try:
        table = pa.Table.from_struct_array(pa.array(rows))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(
            f"{target}: these records cannot be one Parquet table ({err}); a field holds different "
            "types in different records: write JSONL instead"
        ) from None
    with temp_beside(target) as (handle, tmp_name):
        os.close(handle)
        pq.write_table(table, tmp_name)
    return len(rows)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write one JSON document atomically (summaries, configs)."""
    with temp_beside(Path(path)) as (handle, _):
        with open(handle, "w", encoding="utf-8") as out:
            json.dump(obj, out, ensure_ascii=False, indent=2, allow_nan=False)
            out.write("\n")


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (nan, ±inf) with None, recursively, so JSON stays valid."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
