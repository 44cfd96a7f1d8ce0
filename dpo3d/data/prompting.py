"""The boxed-answer convention: the instruction that asks for ``\\boxed{}``, and reading it back.

One template asks every model (sample, eval-math) for step-by-step reasoning and a
final answer in ``\\boxed{}``; the math judge and the dataset loaders read answers
back with :func:`boxed_answer`. Templates hold one ``{question}`` placeholder and
are filled with ``str.replace``, not ``str.format``: LaTeX is full of braces.
"""

from __future__ import annotations

import re
from pathlib import Path

PLACEHOLDER = "{question}"

#: named instruction templates; `--template` takes a name, a template text, or a file
TEMPLATES: dict[str, str] = {
    # the wording of Qwen2.5-Math / DeepSeek-Math evaluations, which small instruct models follow
    "boxed": (
        "Solve the following math problem. Reason step by step, "
        "and put your final answer within \\boxed{}.\n\n" + PLACEHOLDER
    ),
    "boxed-after": PLACEHOLDER + "\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
    # the bare question, for models fine-tuned on their own format
    "plain": PLACEHOLDER,
}
DEFAULT_TEMPLATE = "boxed"


def check_template(template: str) -> str:
    """Return ``template`` if it holds exactly one ``{question}``; else raise ValueError."""
    count = template.count(PLACEHOLDER)
    if count != 1:
        raise ValueError(f"a prompt template needs exactly one {PLACEHOLDER} placeholder, found {count}")
    return template


def resolve_template(spec: str | None = None) -> str:
    """A template from a name in TEMPLATES, a literal text holding ``{question}``, or a file's path."""
    if spec is None:
        return TEMPLATES[DEFAULT_TEMPLATE]
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if PLACEHOLDER in spec:
        return check_template(spec)
    path = Path(spec)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read template file {spec}: {err}") from None
        try:
            return check_template(text.rstrip("\n"))
        except ValueError as err:
            raise ValueError(f"{spec}: {err}") from None
    raise ValueError(
        f"unknown template '{spec}': give one of {', '.join(TEMPLATES)}, "
        f"a text holding {PLACEHOLDER}, or a file that holds one"
    )


def render(question: str, template: str | None = None) -> str:
    """The user turn: ``question`` placed into the template (default: the boxed instruction)."""
    return check_template(template if template is not None else TEMPLATES[DEFAULT_TEMPLATE]).replace(
        PLACEHOLDER, question
    )


def chat_prompt(question: str, template: str | None = None) -> list[dict]:
    """A TRL conversational prompt: one user message holding the rendered template."""
    return [{"role": "user", "content": render(question, template)}]


# --------------------------------------------------------------------------- reading answers back

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# what may sit between two boxes that together state one answer: "$\boxed{1}$ and $k = \boxed{2}$"
_AND_JOIN = re.compile(r"^\$?\s*(?:,\s*)?(?:and|\\text\{\s*and\s*\}|,)\s*\$?\s*(?:[A-Za-z]\w*\s*=\s*)?$")


def _brace_group(text: str, start: int) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``start``; escaped braces do not count."""
    depth = 0
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return None


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5`` in ``text`` as (start, end, content)."""
    spans = []
    for match in _BOX.finditer(text):
        index = match.end()
        while index < len(text) and text[index] == " ":
            index += 1
        if index < len(text) and text[index] == "{":
            end = _brace_group(text, index)
            if end is not None:
                spans.append((match.start(), end, text[index + 1 : end - 1].strip()))
        elif index > match.end():
            # `\boxed 5`: TeX takes the next token as the argument
            bare = re.match(r"[^\s$]+", text[index:])
            if bare:
                spans.append((match.start(), index + bare.end(), bare.group(0).rstrip(".,")))
    return spans


def boxed_answer(text: str) -> str | None:
    """The final boxed answer of a worked solution, or None when nothing is boxed.

    The last box wins (solutions often box an intermediate or a first method's result);
    boxes chained to it by "and" form one answer, joined by ", " ("$\\boxed{1}$ and $\\boxed{9}$").
    """
    spans = [span for span in boxed_spans(text) if span[2]]
    if not spans:
        return None
    parts = [spans[-1]]
    for previous in reversed(spans[:-1]):
        if not _AND_JOIN.match(text[previous[1] : parts[0][0]]):
            break
        parts.insert(0, previous)
    return ", ".join(part[2] for part in parts)
