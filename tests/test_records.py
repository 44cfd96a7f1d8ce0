"""The records layer (dpo3d/data/records.py): bad input, chat prompts, round trips,
atomic writes, stdin/stdout and JSON safety (issue 2, item 5)."""

from __future__ import annotations

import io
import json
import math
import os
import sys

import pytest

from dpo3d.data.records import (
    RecordError,
    iter_records,
    json_safe,
    open_output,
    read_records,
    write_json,
    write_records,
)
from dpo3d.data.run_log import AppendLog, read_log
from dpo3d.data.schema import COMPLETIONS, PAIRS, PAIRS_OR_COMPLETIONS, Schema, is_messages

PAIR = {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]


def write_bytes(tmp_path, data: bytes, name: str = "in.jsonl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def lines(*records) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in records)


def assert_one_line_error(info, path, line: int | None) -> str:
    message = str(info.value)
    assert "\n" not in message
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(where), message
    assert info.value.source == str(path) and info.value.line == line
    return message


def stdin_of(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (lines(PAIR, '{"prompt": "x", "chosen": "y",'), 2, "malformed JSON"),
        (lines(PAIR, "{'prompt': 'single quotes'}"), 2, "malformed JSON"),
        (lines("[1, 2, 3]"), 1, "expected a JSON object, got list"),
        (lines(PAIR, '"just a string"'), 2, "expected a JSON object, got str"),
        (lines("42"), 1, "expected a JSON object, got int"),
        (lines("null"), 1, "expected a JSON object, got null"),
        (lines(PAIR) + b'{"prompt": "caf\xe9"}\n', 2, "not valid UTF-8"),
        (b"\xff\xfe" + lines(PAIR), 1, "not valid UTF-8"),
        (lines({"prompt": "p", "chosen": "c"}), 1, "missing field 'rejected'"),
        (lines(PAIR, {"chosen": "c", "rejected": "r"}), 2, "missing field 'prompt'"),
        (
            lines({**PAIR, "chosen": 5}),
            1,
            "field 'chosen' should be a string or a list of chat messages, got a number",
        ),
        (
            lines({**PAIR, "rejected": None}),
            1,
            "field 'rejected' should be a string or a list of chat messages, got null",
        ),
        (
            lines({**PAIR, "prompt": ["a", "b"]}),
            1,
            "field 'prompt' should be a string or a list of chat messages, got a list",
        ),
        (lines({**PAIR, "prompt": []}), 1, "got an empty list"),
        (lines({**PAIR, "prompt": [{"role": "user"}]}), 1, "field 'prompt' should be"),
        (lines({**PAIR, "prompt": [{"role": "user", "content": 3}]}), 1, "field 'prompt' should be"),
        (lines({**PAIR, "prompt": {"role": "user", "content": "hi"}}), 1, "got an object"),
        (lines({**PAIR, "chosen": True}), 1, "got a boolean"),
        (lines({**PAIR, "id": 7}), 1, "field 'id' should be a string, got a number"),
        # blank lines count: the bad record is on line 3
        (b"\n   \n" + lines({"prompt": "p"}), 3, "missing field 'chosen'"),
    ],
)
def test_bad_input_is_a_one_line_record_error(tmp_path, content, line, problem):
    path = write_bytes(tmp_path, content)
    with pytest.raises(RecordError) as info:
        read_records(path, PAIRS)
    message = assert_one_line_error(info, path, line)
    assert problem in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("content", [b"", b"\n", b"   \n\t\n  \r\n"])
def test_empty_input_is_an_error_unless_allowed(tmp_path, content):
    path = write_bytes(tmp_path, content)
    with pytest.raises(RecordError) as info:
        read_records(path, PAIRS)
    assert "empty input" in assert_one_line_error(info, path, None)
    assert read_records(path, PAIRS, allow_empty=True) == []


def test_missing_file_is_a_record_error(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(RecordError) as info:
        read_records(path)
    assert "no such file" in assert_one_line_error(info, path, None)
    with pytest.raises(RecordError, match="no such file"):
        read_records(tmp_path)  # a folder is not a file


def test_schema_types():
    schema = Schema(
        required={"n": "int", "x": "number", "flag": "bool", "tags": "list", "meta": "dict", "s": "str"}
    )
    good = {"n": 3, "x": 0.5, "flag": False, "tags": [], "meta": {}, "s": ""}
    schema.check(good)
    schema.check({**good, "x": 2})  # an int is a number
    for key, bad in [
        ("n", True),
        ("n", 3.0),
        ("x", True),
        ("x", "1"),
        ("flag", 0),
        ("tags", {}),
        ("meta", []),
        ("s", 1),
    ]:
        with pytest.raises(RecordError, match=f"field '{key}'"):
            schema.check({**good, key: bad}, "f.jsonl", 9)


def test_optional_fields_may_be_absent_or_null():
    PAIRS.check(PAIR)
    PAIRS.check({**PAIR, "id": None})
    PAIRS.check({**PAIR, "id": "a-1"})


def test_pairs_or_completions():
    assert PAIRS_OR_COMPLETIONS.shape(PAIR) == 0
    assert PAIRS_OR_COMPLETIONS.shape({"prompt": "p", "completion": "c"}) == 1
    PAIRS_OR_COMPLETIONS.check({"prompt": "p", "completion": "c"})
    PAIRS_OR_COMPLETIONS.check(PAIR)
    with pytest.raises(RecordError) as info:
        PAIRS_OR_COMPLETIONS.check({"prompt": "p", "chosen": "c"}, "x.jsonl", 4)
    assert (
        str(info.value)
        == "x.jsonl:4: record needs the fields {prompt, chosen, rejected} or {prompt, completion}"
    )
    with pytest.raises(RecordError, match="field 'completion'"):
        PAIRS_OR_COMPLETIONS.check({"prompt": "p", "completion": 1})
    with pytest.raises(RecordError, match="missing field 'completion'"):
        COMPLETIONS.check({"prompt": "p"})


# --------------------------------------------------------------------------- good input


def test_chat_messages_are_accepted_as_text(tmp_path):
    record = {
        "prompt": CHAT,
        "chosen": [{"role": "assistant", "content": "Hi!"}],
        "rejected": "No.",
        "id": "c1",
    }
    path = write_bytes(tmp_path, lines(record))
    assert read_records(path, PAIRS) == [record]
    assert is_messages(CHAT)
    assert (
        not is_messages([]) and not is_messages("hi") and not is_messages([{"role": "user", "content": None}])
    )


def test_unknown_fields_survive_a_round_trip(tmp_path):
    records = [
        {**PAIR, "id": "0", "score": 4.5, "meta": {"judge": "rules", "tags": ["a", "b"]}, "extra": None},
        {"prompt": CHAT, "chosen": "Grüße, 你好 ✓", "rejected": "r", "nested": [[1, 2], {"k": True}]},
    ]
    path = tmp_path / "out" / "pairs.jsonl"  # the folder is created
    assert write_records(records, path) == 2
    assert read_records(path, PAIRS) == records
    text = path.read_text(encoding="utf-8")
    assert "你好" in text  # written as UTF-8, not \u escapes
    assert text.endswith("\n") and text.count("\n") == 2
    assert [record for _, record in iter_records(path)] == records


def test_crlf_line_endings_are_read(tmp_path):
    path = write_bytes(tmp_path, json.dumps(PAIR).encode() + b"\r\n" + json.dumps(PAIR).encode() + b"\r\n")
    assert read_records(path, PAIRS) == [PAIR, PAIR]


def test_iter_records_numbers_lines_and_takes_a_stream():
    stream = io.BytesIO(b"\n" + lines(PAIR) + b"\n" + lines({"a": 1}))
    assert list(iter_records("given.jsonl", stream=stream)) == [(2, PAIR), (4, {"a": 1})]


# --------------------------------------------------------------------------- stdin and stdout


def test_read_from_stdin(monkeypatch):
    stdin_of(monkeypatch, lines(PAIR, {**PAIR, "id": "2"}))
    assert read_records("-", PAIRS) == [PAIR, {**PAIR, "id": "2"}]


def test_stdin_is_the_default(monkeypatch):
    stdin_of(monkeypatch, lines(PAIR))
    assert read_records() == [PAIR]


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (lines(PAIR, "{oops"), 2, "malformed JSON"),
        (b'{"prompt": "\xff"}\n', 1, "not valid UTF-8"),
        (lines({"prompt": 1, "chosen": "c", "rejected": "r"}), 1, "field 'prompt'"),
    ],
)
def test_bad_stdin_names_stdin(monkeypatch, data, line, problem):
    stdin_of(monkeypatch, data)
    with pytest.raises(RecordError) as info:
        read_records("-", PAIRS)
    assert problem in assert_one_line_error(info, "<stdin>", line)


def test_empty_stdin(monkeypatch):
    stdin_of(monkeypatch, b"  \n")
    with pytest.raises(RecordError) as info:
        read_records("-")
    assert str(info.value) == "<stdin>: empty input: no records"


def test_write_to_stdout(capsys):
    assert write_records([PAIR, {"x": "é"}], "-") == 2
    out = capsys.readouterr().out
    assert [json.loads(line) for line in out.splitlines()] == [PAIR, {"x": "é"}]


# --------------------------------------------------------------------------- atomic writes


class Boom(RuntimeError):
    pass


def records_then_boom():
    yield PAIR
    yield PAIR
    raise Boom


def test_failed_write_leaves_no_file_and_no_temp_file(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(Boom):
        write_records(records_then_boom(), target)
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(Boom):
        with open_output(target) as out:
            out.write(json.dumps(PAIR) + "\n")
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_an_existing_target_untouched(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old contents\n", encoding="utf-8")
    with pytest.raises(Boom):
        write_records(records_then_boom(), target)
    assert target.read_text(encoding="utf-8") == "old contents\n"
    assert list(tmp_path.iterdir()) == [target]

    with pytest.raises(KeyboardInterrupt):
        with open_output(target) as out:
            out.write("half a line")
            raise KeyboardInterrupt
    assert target.read_text(encoding="utf-8") == "old contents\n"
    assert list(tmp_path.iterdir()) == [target]


def test_nothing_is_visible_at_the_target_until_the_write_succeeds(tmp_path):
    target = tmp_path / "out.jsonl"
    with open_output(target) as out:
        out.write(json.dumps(PAIR) + "\n")
        assert not target.exists()
    assert read_records(target) == [PAIR]
    assert list(tmp_path.iterdir()) == [target]


def test_non_finite_numbers_are_refused_on_write_and_leave_no_file(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(ValueError):
        write_records([PAIR, {"score": math.nan}], target)
    assert list(tmp_path.iterdir()) == []
    # json_safe makes such a record writable
    assert write_records([json_safe({"score": math.nan})], target) == 1
    assert read_records(target) == [{"score": None}]


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    target = tmp_path / "out.jsonl"
    write_records([PAIR], target)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_json_is_atomic(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    write_json({"loss": 0.5, "name": "dpo"}, target)
    assert json.loads(target.read_text(encoding="utf-8")) == {"loss": 0.5, "name": "dpo"}
    with pytest.raises(ValueError):
        write_json({"loss": math.inf}, target)
    assert json.loads(target.read_text(encoding="utf-8")) == {"loss": 0.5, "name": "dpo"}
    assert list(target.parent.iterdir()) == [target]


# --------------------------------------------------------------------------- logs and JSON safety


def test_json_safe_replaces_nan_and_inf():
    value = {
        "a": math.nan,
        "b": [1.0, math.inf, -math.inf, (2, math.nan)],
        "c": {"d": -0.0, "e": "nan", "f": None, "g": True, "h": 7},
    }
    safe = json_safe(value)
    assert safe == {
        "a": None,
        "b": [1.0, None, None, [2, None]],
        "c": {"d": -0.0, "e": "nan", "f": None, "g": True, "h": 7},
    }
    json.dumps(safe, allow_nan=False)  # valid JSON now
    assert json_safe(1.5) == 1.5 and json_safe(math.inf) is None and json_safe("x") == "x"


def test_append_log_and_read_log(tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    with AppendLog(path) as log:
        log.write({"step": 1, "loss": 0.7})
        log.write({"step": 2, "loss": 0.6})
    with AppendLog(path) as log:  # appends, does not truncate
        log.write({"step": 3, "loss": 0.5})
    assert [r["step"] for r in read_log(path)] == [1, 2, 3]
    assert read_log(tmp_path / "missing.jsonl") == []


def test_read_log_drops_a_torn_last_line_but_not_corruption(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_log(path) == [{"step": 1}, {"step": 2}]
    path.write_bytes(b'{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(RecordError) as info:
        read_log(path)
    assert str(info.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_are_refused_on_read(tmp_path, constant):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(PAIR) + "\n" + '{"score": ' + constant + "}\n", encoding="utf-8")
    with pytest.raises(RecordError) as err:
        read_records(source)
    assert str(err.value).startswith(f"{source}:2: {constant} ")
