"""TRL's dataset formats into the one record contract, on hand-made cases."""

from __future__ import annotations

import pytest

from dpo3d.data import formats
from dpo3d.data.records import RecordError


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


SYSTEM = {"role": "system", "content": "You are terse."}


def test_explicit_prompts_pass_through_untouched():
    standard = {"prompt": "2+2?", "chosen": "4", "rejected": "5", "keep": 1}
    assert formats.as_pair(standard) is standard
    conversational = {"prompt": [user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}
    assert formats.as_pair(conversational) is conversational


def test_implicit_prompt_with_a_shared_system_message():
    record = {"chosen": [SYSTEM, user("2+2?"), assistant("4")], "rejected": [SYSTEM, user("2+2?"), assistant("5")], "id": "x"}
    assert formats.as_pair(record) == {
        "id": "x", "prompt": [SYSTEM, user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")],
    }


def test_implicit_prompt_multi_turn_splits_after_the_last_shared_message():
    history = [user("Hi"), assistant("Hello."), user("2+2?")]
    record = {"chosen": [*history, assistant("4")], "rejected": [*history, assistant("5"), user("sure?"), assistant("yes")]}
    pair = formats.as_pair(record)
    assert pair["prompt"] == history
    assert pair["chosen"] == [assistant("4")]
    assert pair["rejected"] == [assistant("5"), user("sure?"), assistant("yes")]


def test_no_shared_prefix_is_an_error():
    with pytest.raises(RecordError, match="share no first message"):
        formats.as_pair({"chosen": [user("a"), assistant("x")], "rejected": [user("b"), assistant("x")]}, "p.parquet", 3)


def test_conversations_parting_on_a_user_turn_are_not_a_preference():
    history = [user("Hi"), assistant("Hello.")]
    with pytest.raises(RecordError, match=r"part at message 2, a 'user' turn in chosen"):
        formats.as_pair({"chosen": [*history, user("a"), assistant("x")], "rejected": [*history, user("b"), assistant("x")]})


def test_one_side_a_prefix_of_the_other_leaves_no_response():
    with pytest.raises(RecordError, match="no response is left"):
        formats.as_pair({"chosen": [user("a"), assistant("x")], "rejected": [user("a"), assistant("x"), user("more")]})


def test_hh_rlhf_strings_split_at_the_last_shared_assistant_turn():
    history = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: 2+2?\n\nAssistant:"
    pair = formats.as_pair({"chosen": history + " 4", "rejected": history + " Five, I think."})
    assert pair == {"prompt": history, "chosen": " 4", "rejected": " Five, I think."}


def test_hh_strings_whose_answers_share_a_beginning_still_split_at_the_turn():
    history = "\n\nHuman: Name a colour.\n\nAssistant:"
    pair = formats.as_pair({"chosen": history + " Blue.", "rejected": history + " Blah."})
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == (history, " Blue.", " Blah.")


def test_strings_without_an_assistant_turn_need_a_prompt():
    with pytest.raises(RecordError, match="share no 'Assistant:' turn"):
        formats.as_pair({"chosen": "The answer is 4", "rejected": "The answer is 5"})


def test_a_string_prompt_beside_whole_conversations_is_extracted_from_them():
    # UltraFeedback-binarized: prompt is the question text, chosen/rejected the whole conversation
    record = {"prompt": "2+2?", "chosen": [user("2+2?"), assistant("4")], "rejected": [user("2+2?"), assistant("5")]}
    assert formats.as_pair(record) == {"prompt": [user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}


def test_a_messages_prompt_repeated_in_the_responses_is_cut_from_them():
    record = {"prompt": [user("2+2?")], "chosen": [user("2+2?"), assistant("4")], "rejected": [user("2+2?"), assistant("5")]}
    assert formats.as_pair(record) == {"prompt": [user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}


def test_mixed_string_and_messages_responses_are_refused():
    with pytest.raises(RecordError, match="both be strings or both chat messages"):
        formats.as_pair({"prompt": "p", "chosen": "a", "rejected": [assistant("b")]})


def test_messages_become_prompt_and_final_assistant_turn():
    conversation = [SYSTEM, user("Hi"), assistant("Hello."), user("2+2?"), assistant("4")]
    record = formats.as_completion({"messages": conversation})
    assert record["prompt"] == conversation[:-1] and record["completion"] == [assistant("4")]
    with pytest.raises(RecordError, match="ends with a 'user' turn"):
        formats.as_completion({"messages": conversation[:-1]}, "chat.parquet", 0)
    with pytest.raises(RecordError, match="no prompt"):
        formats.as_completion({"messages": [assistant("4")]})


def test_pair_or_completion_dispatches_on_the_fields():
    assert formats.as_pair_or_completion({"prompt": "p", "completion": "c"}) == {"prompt": "p", "completion": "c"}
    with pytest.raises(RecordError, match="missing field 'rejected'"):
        formats.as_pair_or_completion({"prompt": "p", "chosen": "c"})
