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

With a ``max_length``, a text is tokenised only as far as the tokens kept need: the
response from its start, the prompt from its end. A stretch of the text is tokenised,
and taken when it yields ``max_length`` tokens and :data:`MARGIN_TOKENS` more and a
stretch one character longer gives the same tokens to keep (the cut does not reach
them); else the stretch doubles, up to the whole text. A 10 MB response then costs a
few kB of tokenising, not ~1.5 GB of the tokenizer's memory, and what is kept is what
the whole text gives: a text that fits in the first stretch is tokenised whole, and a
text whose kept tokens depend on where it is cut (a prompt ending in a run of one
character thousands long, which BPE splits from the run's start) is tokenised whole too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpo3d.data.schema import is_messages


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


#: tokens tokenised past the last one a stretch keeps: its cut's own tokens may differ from the whole text's
MARGIN_TOKENS = 64
#: the first stretch of text tried per token needed (English averages about 4 characters a token)
_FIRST_CHARS_PER_TOKEN = 8


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def bounded_ids(tokenizer, text: str, keep: int | None, from_end: bool = False, special: bool = False) -> list[int]:
    """The first ``keep`` token ids of ``text`` (``from_end``: its last ``keep``) as tokenising the whole
    text gives them, or all of them when there are fewer; without ``keep``, all of them. ``special``: with
    the tokenizer's special tokens (e.g. BOS) added, as it adds them to the whole text."""
    if keep is None:
        return _ids(tokenizer, text, special)

    def kept(ids: list[int]) -> list[int]:
        return ids[max(0, len(ids) - keep) :] if from_end else ids[:keep]

    def stretch(chars: int) -> list[int]:
        return _ids(tokenizer, text[-chars:] if from_end else text[:chars], special)

    chars = (keep + MARGIN_TOKENS) * _FIRST_CHARS_PER_TOKEN
    while chars + 1 < len(text):
        ids = stretch(chars)
        if len(ids) >= keep + MARGIN_TOKENS and kept(ids) == kept(stretch(chars + 1)):
            return kept(ids)
        chars *= 2
    return kept(_ids(tokenizer, text, special))


def encode_prompt(tokenizer, prompt: Any, keep_last: int | None = None) -> list[int]:
    """The prompt's token ids; with ``keep_last``, only its last ``keep_last`` (a long prompt is then
    tokenised only as far as they need)."""
    text = render_prompt(tokenizer, prompt)
    # a chat template writes its own special tokens; a plain prompt gets the tokenizer's (e.g. BOS)
    return bounded_ids(tokenizer, text, keep_last, from_end=True, special=not is_messages(prompt))


def encode_pair(tokenizer, prompt: Any, response: Any, max_length: int | None = None) -> EncodedPair:
    """Token ids of prompt and response; over ``max_length`` the response keeps its start and the
    prompt its end (the response keeps at least half the budget)."""
    # neither side keeps more than max_length tokens: tokenise each only as far as that needs
    prompt_ids = encode_prompt(tokenizer, prompt, max_length)
    response_ids = bounded_ids(tokenizer, render_response(tokenizer, prompt, response), max_length)
    if max_length is not None and len(prompt_ids) + len(response_ids) > max_length:
        response_budget = max(max_length - len(prompt_ids), min(len(response_ids), max_length // 2))
        response_ids = response_ids[:response_budget]
        prompt_ids = prompt_ids[len(prompt_ids) - (max_length - len(response_ids)) :]
    return EncodedPair(prompt_ids, response_ids)
