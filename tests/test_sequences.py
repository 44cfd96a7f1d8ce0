"""How prompts and responses become tokens."""

from __future__ import annotations

import pytest

from dpo3d.data.sequences import encode_pair, render_prompt, render_response

MESSAGES = [{"role": "user", "content": "Name a prime."}]


def test_chat_prompt_uses_the_template_with_generation_prompt(tokenizer):
    text = render_prompt(tokenizer, MESSAGES)
    assert text.startswith("<|im_start|>system")
    assert text.endswith("<|im_start|>assistant\n")
    assert "Name a prime." in text


def test_response_to_chat_prompt_ends_at_end_of_turn(tokenizer):
    assert render_response(tokenizer, MESSAGES, "7") == "7<|im_end|>"
    # a conversational (TRL) response is the same thing
    assert render_response(tokenizer, MESSAGES, [{"role": "assistant", "content": "7"}]) == "7<|im_end|>"


def test_plain_prompt_is_used_as_is_and_response_gets_eos(tokenizer):
    assert render_prompt(tokenizer, "2+2=") == "2+2="
    assert render_response(tokenizer, "2+2=", "4") == "4" + tokenizer.eos_token


def test_truncation_keeps_response_start_and_prompt_end(tokenizer):
    long_prompt = "word " * 200
    pair = encode_pair(tokenizer, long_prompt, "the response " * 100, max_length=64)
    full = encode_pair(tokenizer, long_prompt, "the response " * 100)
    assert len(pair) == 64
    assert pair.response_ids == full.response_ids[: len(pair.response_ids)]
    assert pair.prompt_ids == full.prompt_ids[-len(pair.prompt_ids) :]
    assert len(pair.response_ids) >= 32


def test_chat_prompt_without_template_is_a_clear_error(tokenizer):
    template = tokenizer.chat_template
    tokenizer.chat_template = None
    try:
        with pytest.raises(ValueError, match="no chat template"):
            render_prompt(tokenizer, MESSAGES)
    finally:
        tokenizer.chat_template = template
