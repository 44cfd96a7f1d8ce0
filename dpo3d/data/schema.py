"""What a record's fields must be: prompts and responses as text (a string or chat messages), and the
:class:`Schema` each stage checks its input records against (a :class:`~dpo3d.data.records.RecordError`
naming the file, the line and the field when one does not fit)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .records import RecordError

#: JSON types by name, as a stage declares them in a Schema
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "number": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
    "text": (str,),  # a string, or a list of chat messages: see is_text()
}


def is_messages(value: Any) -> bool:
    """True for a chat (TRL "conversational") value: a list of {role, content} dicts."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    )


def is_text(value: Any) -> bool:
    """A prompt or response: a plain string or a list of chat messages."""
    return isinstance(value, str) or is_messages(value)


def message_text(value: Any, role: str | None = None, last: bool = False) -> str:
    """A prompt or response as plain text: a string as it is; of chat messages, the contents of
    those with ``role`` (all messages when no role is given or none has it), joined by newlines,
    or only the last one. Raises ValueError for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, Mapping) for m in value):
        picked = [m for m in value if role is None or m.get("role") == role] or value
        contents = [str(m.get("content") or "") for m in picked]
        return (contents[-1] if contents else "") if last else "\n".join(contents)
    raise ValueError(f"expected a string or a list of chat messages, got {type(value).__name__}")


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "text":
        return is_text(value)
    if kind in ("int", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


@dataclass(frozen=True)
class Schema:
    """The fields one stage needs: ``required`` and ``optional`` map field -> type name.

    ``one_of`` lists alternative required groups (e.g. pairs *or* completions);
    the first group that is fully present is the record's shape.
    """

    required: Mapping[str, str]
    optional: Mapping[str, str] | None = None
    one_of: tuple[Mapping[str, str], ...] = ()

    def shape(self, record: Mapping) -> int:
        """Index of the ``one_of`` group the record matches (0 when there are none)."""
        for index, group in enumerate(self.one_of):
            if all(key in record for key in group):
                return index
        return 0

    def check(self, record: Mapping, source: str = "<input>", line: int | None = None) -> None:
        fields = dict(self.required)
        if self.one_of:
            index = self.shape(record)
            if not all(key in record for key in self.one_of[index]):
                wanted = " or ".join("{" + ", ".join(group) + "}" for group in self.one_of)
                raise RecordError(source, line, f"record needs the fields {wanted}")
            fields.update(self.one_of[index])
        for key, kind in fields.items():
            if key not in record:
                raise RecordError(source, line, f"missing field '{key}'")
            if not _type_ok(record[key], kind):
                raise RecordError(source, line, f"field '{key}' should be {_describe(kind)}, got {_json_type(record[key])}")
        for key, kind in (self.optional or {}).items():
            if key in record and record[key] is not None and not _type_ok(record[key], kind):
                raise RecordError(source, line, f"field '{key}' should be {_describe(kind)}, got {_json_type(record[key])}")


def _describe(kind: str) -> str:
    return {
        "text": "a string or a list of chat messages",
        "str": "a string",
        "int": "an integer",
        "number": "a number",
        "bool": "true or false",
        "list": "a list",
        "dict": "an object",
    }[kind]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "an object"


#: the stage schemas the suite shares
PAIRS = Schema(required={"prompt": "text", "chosen": "text", "rejected": "text"}, optional={"id": "str"})
COMPLETIONS = Schema(required={"prompt": "text", "completion": "text"}, optional={"id": "str"})
PAIRS_OR_COMPLETIONS = Schema(
    required={},
    optional={"id": "str"},
    one_of=(
        {"prompt": "text", "chosen": "text", "rejected": "text"},
        {"prompt": "text", "completion": "text"},
    ),
)
