"""Turn (prompt, response) records into token ids the way the model sees them.

* A prompt that is a list of chat messages goes through the tokenizer's chat
  template with the generation prompt; a response to it is whatever the template
  appends for the assistant turn (for SmolLM2: the text, then ``<|im_end|>``),
  found as the suffix of the templated full conversation. This matches what
  ``sample`` generates.
* A plain-string prompt is used as is (TRL's "standard" format), and the
  response gets the tokenizer's EOS token appended.

Prompt and response are tokenised separately and concatenated, so the response
tokens are exactly the ones scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpo3d.data.records import is_messages


@dataclass(frozen=True)
class EncodedPair:
    prompt_ids: list[int]
    response_ids: list[int]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def render_prompt(tokenizer, prompt: Any) -> str:
    if is_messages(prompt):
        if tokenizer.chat_template is None:
            raise ValueError("prompt is a list of chat messages but the model's tokenizer has no chat template")
        return tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
    return prompt


def _response_messages(response: Any) -> list[dict]:
    if is_messages(response):
        return list(response)
    return [{"role": "assistant", "content": response}]


def render_response(tokenizer, prompt: Any, response: Any) -> str:
    """The text appended to the rendered prompt for this response (end-of-turn included)."""
    if is_messages(prompt):
        prefix = render_prompt(tokenizer, prompt)
        full = tokenizer.apply_chat_template(list(prompt) + _response_messages(response), tokenize=False)
        if not full.startswith(prefix):
            raise ValueError("the chat template does not extend the prompt when a response is added")
        response = full[len(prefix) :]
        # the template may write a newline after the end-of-turn token; generation stops at the token
        eos = tokenizer.eos_token
        if eos and response.rstrip().endswith(eos):
            response = response.rstrip()
        return response
    if is_messages(response):
        response = "".join(message["content"] for message in response)
    return response + (tokenizer.eos_token or "")


def encode_prompt(tokenizer, prompt: Any) -> list[int]:
    text = render_prompt(tokenizer, prompt)
    # a chat template writes its own special tokens; a plain prompt gets the tokenizer's (e.g. BOS)
    return tokenizer(text, add_special_tokens=not is_messages(prompt))["input_ids"]


def encode_pair(tokenizer, prompt: Any, response: Any, max_length: int | None = None) -> EncodedPair:
    """Token ids of prompt and response; over ``max_length`` the response keeps its start and the
    prompt its end (the response keeps at least half the budget)."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = tokenizer(render_response(tokenizer, prompt, response), add_special_tokens=False)["input_ids"]
    if max_length is not None and len(prompt_ids) + len(response_ids) > max_length:
        response_budget = max(max_length - len(prompt_ids), min(len(response_ids), max_length // 2))
        response_ids = response_ids[:response_budget]
        prompt_ids = prompt_ids[len(prompt_ids) - (max_length - len(response_ids)) :]
    return EncodedPair(prompt_ids, response_ids)
