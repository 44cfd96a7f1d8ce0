"""TRL's dataset formats, read into the suite's one record contract.

Every stage works on ``prompt`` plus ``chosen``/``rejected`` (pairs) or ``completion``, each a
string ("standard") or a list of chat messages ("conversational"). These checks take what
researchers' datasets hold and return records in that shape (fields they do not know pass
through untouched):

- **explicit prompt**: a string ``prompt`` with string responses, or a messages ``prompt`` with
  string responses (the assistant's text) or assistant-message responses, is used as it is (a
  messages prompt repeated at the start of both responses is cut from them);
- **implicit prompt**: no ``prompt`` (or a string ``prompt`` beside conversational responses, as
  in UltraFeedback-binarized): ``chosen`` and ``rejected`` hold the whole conversation and the
  prompt is their shared beginning. Conversations split after the last shared message, which
  must come before an assistant turn; strings split after the last shared ``\\n\\nAssistant:``
  (Anthropic HH-RLHF);
- **prompt-completion**: ``prompt`` and ``completion``;
- **unpaired preference** (KTO's data): ``prompt``, ``completion`` and a boolean ``label``
  (true: the completion is desirable);
- **conversational language modelling** (``messages``, for sft and scoring): the final message
  must be an assistant turn and is the completion; every earlier message, earlier assistant
  turns included, is the prompt — context the model conditions on, never trained on.

Each check has the input layer's signature ``(record, source, position) -> record`` and raises
RecordError naming the record. No torch here.
"""

from __future__ import annotations

from typing import Any

from dpo3d.data.records import RecordError
from dpo3d.data.schema import is_messages, is_text

#: where Anthropic HH-RLHF's strings hand the turn to the assistant
HH_ASSISTANT = "\n\nAssistant:"


def split_conversations(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected) of two conversations sharing a beginning; ValueError if they share none."""
    shared = 0
    for mine, theirs in zip(chosen, rejected, strict=False):
        if mine != theirs:
            break
        shared += 1
    if shared == 0:
        raise ValueError("no prompt field, and chosen and rejected share no first message to take as the prompt")
    if shared == len(chosen) or shared == len(rejected):
        raise ValueError("no prompt field, and one of chosen/rejected is the other's beginning: no response is left to compare")
    for side, messages in (("chosen", chosen), ("rejected", rejected)):
        if messages[shared].get("role") != "assistant":
            raise ValueError(
                f"no prompt field, and the conversations part at message {shared}, a '{messages[shared].get('role')}' "
                f"turn in {side}: a preference pair differs from an assistant turn on"
            )
    return chosen[:shared], chosen[shared:], rejected[shared:]


def split_strings(chosen: str, rejected: str, marker: str = HH_ASSISTANT) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of two HH-style transcripts: the prompt ends with the last
    ``marker`` the two share."""
    shared = 0
    for mine, theirs in zip(chosen, rejected, strict=False):
        if mine != theirs:
            break
        shared += 1
    cut = chosen.rfind(marker, 0, shared)
    if cut < 0:
        raise ValueError(
            f"no prompt field, and chosen and rejected share no {marker.strip()!r} turn to split at "
            "(give the prompt as a field, or map one with --columns)"
        )
    end = cut + len(marker)
    return chosen[:end], chosen[end:], rejected[end:]


def as_pair(record: dict, source: str = "<input>", position: int | None = None) -> dict:
    """A preference record in any TRL preference format, as ``{prompt, chosen, rejected, ...}``."""
    for key in ("chosen", "rejected"):
        if key not in record:
            raise RecordError(source, position, f"missing field '{key}' (a pair needs chosen and rejected)")
        if not is_text(record[key]):
            raise RecordError(source, position, f"field '{key}' should be a string or a list of chat messages")
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if is_messages(chosen) != is_messages(rejected):
        raise RecordError(source, position, "chosen and rejected should both be strings or both chat messages")
    if prompt is not None and not is_text(prompt):
        raise RecordError(source, position, "field 'prompt' should be a string or a list of chat messages")
    if prompt is not None and (is_messages(prompt) or not is_messages(chosen)):
        # a messages prompt with string responses is the suite's own form: each is the assistant's text
        if is_messages(prompt) and all(side[: len(prompt)] == prompt and len(side) > len(prompt) for side in (chosen, rejected)):
            # a messages prompt beside whole conversations: the responses are what follows it
            return {**record, "chosen": chosen[len(prompt):], "rejected": rejected[len(prompt):]}
        return record
    try:
        if is_messages(chosen):
            prompt, chosen, rejected = split_conversations(chosen, rejected)
        else:
            prompt, chosen, rejected = split_strings(chosen, rejected)
    except ValueError as err:
        raise RecordError(source, position, str(err)) from None
    return {**record, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def as_completion(record: dict, source: str = "<input>", position: int | None = None) -> dict:
    """A prompt-completion record, or a ``messages`` conversation split before its final assistant turn."""
    if "completion" not in record and "messages" in record:
        messages = record["messages"]
        if not is_messages(messages):
            raise RecordError(source, position, "field 'messages' should be a list of chat messages")
        last = messages[-1].get("role")
        if last != "assistant":
            raise RecordError(source, position, f"the conversation ends with a '{last}' turn: the final turn should be the assistant's (the target)")
        if len(messages) < 2:
            raise RecordError(source, position, "the conversation is a lone assistant turn: there is no prompt")
        return {**record, "prompt": messages[:-1], "completion": messages[-1:]}
    for key in ("prompt", "completion"):
        if key not in record:
            raise RecordError(source, position, f"missing field '{key}' (or give a 'messages' conversation)")
        if not is_text(record[key]):
            raise RecordError(source, position, f"field '{key}' should be a string or a list of chat messages")
    return record


def is_pair(record: dict) -> bool:
    return "chosen" in record or "rejected" in record


def is_unpaired(record: dict) -> bool:
    """TRL's unpaired preference format: a completion with a ``label`` (true: desirable), no chosen/rejected."""
    return "label" in record and not is_pair(record)


def as_unpaired(record: dict, source: str = "<input>", position: int | None = None) -> dict:
    """An unpaired preference record ``{prompt, completion, label}`` (KTO's data), label a boolean."""
    record = as_completion(record, source, position)
    if not isinstance(record["label"], bool):
        raise RecordError(source, position, "field 'label' should be true (a desirable completion) or false (an undesirable one)")
    return record


def as_pair_or_unpaired(record: dict, source: str = "<input>", position: int | None = None) -> dict:
    """A preference pair in any TRL format, or an unpaired ``{prompt, completion, label}`` example."""
    return as_unpaired(record, source, position) if is_unpaired(record) else as_pair(record, source, position)


def as_pair_or_completion(record: dict, source: str = "<input>", position: int | None = None) -> dict:
    """Pairs where the record has chosen/rejected, else a completion (``logprobs`` scores both)."""
    return as_pair(record, source, position) if is_pair(record) else as_completion(record, source, position)


def target_text(record: dict, fields: tuple[str, ...]) -> Any:
    """The first of ``fields`` the record has (sft's target: completion, chosen or reference)."""
    return next((record[key] for key in fields if record.get(key) is not None), None)
