"""Reading a model's poem: title, rows, characters. The rules are exact, so scores are reproducible.

A completion is read in this order:

1. Newlines are normalised; Markdown wrappers are dropped: code-fence lines
   (```), and at the start of a line ``#`` headings, ``>`` quotes, list bullets
   (``-``, ``*``, ``•``, ``1.``, ``1)``, ``1、``); ``**``/``__`` anywhere.
2. Blank lines are remembered (for rule 4d) and then ignored.
3. Preamble: if the first non-blank line ends with a colon (``:`` or ``：``) and
   more lines follow, it is dropped ("好的，以下是一首五言绝句：").
4. Title: the first remaining line is the title if
   (a) it carries a label: ``标题：``, ``题目：``, ``诗题：``, ``题：``, ``Title:``;
   (b) it is wholly wrapped in 《》, 「」, 『』, “”, "" or was a Markdown heading or bold;
   (c) it equals the requested title (compared as :func:`normalise_title` does)
       or, for Song ci, starts with the requested tune name;
   (d) it is followed by a blank line and at least two more lines follow; or
   (e) (Chinese only) it has no row-ending punctuation and the next line does.
   A title line is never a row.
5. Byline: a line right after the title (or the last line) that names an author
   is dropped: ``唐·李白``, ``〔唐〕李白``, ``作者：李白``, ``——李白``, ``by Emily Dickinson``;
   so is, right after a Chinese title, a bare name of 2-4 Chinese characters
   without punctuation when the next line has row-ending punctuation.
6. Notes: a line starting with a label ``注：``/``注释``/``赏析``/``译文``/``解析``/
   ``说明``/``Note:``/``Notes:``/``Explanation:`` ends the poem; it and all that
   follows are ignored. Any other extra text stays and counts as rows.
7. Rows. Chinese: every line is cut at line breaks, whitespace and the
   row-ending punctuation ``。！？，；`` (and their ASCII forms ``.!?,;``); the
   enumeration comma ``、`` does not end a row. English: each line is a row.
8. Characters of a Chinese row: Chinese characters, Latin letters and digits each
   count one; all other punctuation and symbols are removed. Non-Chinese
   characters count for length but match no tone slot and no rhyme.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from dpo3d.poetry.tones import is_han

ZH_ROW_BREAK = re.compile(r"[。！？，；.!?,;\s\u3000]+")
_CONTENT = re.compile(r"[\w]", re.UNICODE)
FENCE = re.compile(r"^\s*```")
_LEADING_MARKS = re.compile(r"^\s*(?:#{1,6}\s*|>\s*|[-*•]\s+|\d{1,2}[.)、]\s*)")
_EMPHASIS = re.compile(r"\*\*|__")
_LABEL = re.compile(r"^\s*(?:标题|题目|诗题|题|title)\s*[:：]\s*(.+?)\s*$", re.IGNORECASE)
_WRAPPED = re.compile(r"^\s*(?:《(.+)》|「(.+)」|『(.+)』|“(.+)”|\"(.+)\")\s*$")
PREAMBLE = re.compile(r"[:：]\s*$")
_DYNASTY = "先秦|汉|魏|晋|南北朝|南朝|北朝|隋|唐|五代|宋|南宋|北宋|金|元|明|清|近代|现代|当代"
_BYLINE = re.compile(
    rf"^\s*(?:(?:[\[（(〔【]\s*(?:{_DYNASTY})\s*[\]）)〕】]|(?:{_DYNASTY})\s*[·・.\-—\s])\s*\S{{1,6}}"
    r"|(?:作者|author)\s*[:：]\s*\S.{0,30}"
    r"|[—–-]{1,2}\s*\S.{0,30}"
    r"|(?-i:[Bb]y\s+(?:[A-Z][\w.'\-]*\s*){1,4}))\s*$",
    re.IGNORECASE,
)
NOTES = re.compile(r"^\s*(?:注释|注|赏析|译文|解析|说明|创作背景|notes?|explanation)\s*[:：]", re.IGNORECASE)
_ROW_END = re.compile(r"[。！？，；.!?,;]")
_TITLE_JUNK = re.compile(r"[\s《》「」『』“”\"'‘’〈〉<>()（）\[\]【】:：,，.。!！?？;；·・\-—_*#]+")


@dataclass
class ParsedPoem:
    """What :func:`parse_poem` found: the title line (or None) and the rows."""

    title: str | None
    rows: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the body lines before they were cut into rows


def normalise_title(title: str) -> str:
    """NFKC, lower case, without spaces, brackets, quotes and punctuation: the form titles are compared in."""
    return _TITLE_JUNK.sub("", unicodedata.normalize("NFKC", title)).lower()


def content_chars(text: str) -> str:
    """The characters that count in a Chinese row: Chinese characters, letters, digits."""
    return "".join(char for char in text if _CONTENT.fullmatch(char) and char != "_")


def split_zh_rows(text: str) -> list[str]:
    """Cut Chinese text into rows (rule 7) and keep their counting characters (rule 8)."""
    rows = (content_chars(piece) for piece in ZH_ROW_BREAK.split(text))
    return [row for row in rows if row]


def clean_line(line: str) -> tuple[str, bool]:
    """Strip Markdown wrappers; also say whether the line was a heading or wholly bold."""
    stripped = line.strip()
    marked = stripped.startswith("#") or (stripped.startswith("**") and stripped.endswith("**") and len(stripped) > 4)
    stripped = _LEADING_MARKS.sub("", stripped, count=1)
    return _EMPHASIS.sub("", stripped).strip(), marked


def _title_from(line: str, marked: bool, wanted: str | None, tune: str | None) -> str | None:
    """The title a line states by rules 4a-4c, or None."""
    label = _LABEL.match(line)
    if label:
        return label.group(1)
    wrapped = _WRAPPED.match(line)
    if wrapped:
        return next(group for group in wrapped.groups() if group)
    if marked:
        return line
    key = normalise_title(line)
    if wanted and key and key == normalise_title(wanted):
        return line
    if tune and key.startswith(normalise_title(tune)):
        return line
    return None


def _bare_author(lines: list[tuple[str, bool, bool]]) -> bool:
    """A line of 2-4 Chinese characters without punctuation, before a line with row punctuation: a name."""
    first = lines[0][0]
    return (
        len(lines) >= 2
        and 2 <= len(first) <= 4
        and all(is_han(char) for char in first)
        and bool(_ROW_END.search(lines[1][0]))
    )


def parse_poem(completion: str, language: str = "zh", title: str | None = None, tune: str | None = None) -> ParsedPoem:
    """Read a completion into title and rows by the rules of the module docstring."""
    raw_lines = unicodedata.normalize("NFC", completion.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    lines: list[tuple[str, bool, bool]] = []  # (text, was marked, blank line follows)
    for raw in raw_lines:
        if FENCE.match(raw):
            continue
        text, marked = clean_line(raw)
        if not text:
            if lines:
                lines[-1] = (lines[-1][0], lines[-1][1], True)
            continue
        lines.append((text, marked, False))
    if len(lines) > 1 and PREAMBLE.search(lines[0][0]) and not _LABEL.match(lines[0][0]):
        lines = lines[1:]

    found_title = None
    if lines:
        first, marked, blank_after = lines[0]
        found_title = _title_from(first, marked, title, tune)
        if found_title is None and blank_after and len(lines) >= 3:
            found_title = first
        if (
            found_title is None
            and language == "zh"
            and len(lines) >= 2
            and not _ROW_END.search(first)
            and _ROW_END.search(lines[1][0])
        ):
            found_title = first
        if found_title is not None:
            lines = lines[1:]
            if lines and (_BYLINE.match(lines[0][0]) or (language == "zh" and _bare_author(lines))):
                lines = lines[1:]

    body: list[str] = []
    for text, _, _ in lines:
        if NOTES.match(text):
            break
        body.append(text)
    if len(body) > 1 and _BYLINE.match(body[-1]) and not _ROW_END.search(body[-1].lstrip("—–-")):
        body = body[:-1]

    if language == "zh":
        rows = [row for line in body for row in split_zh_rows(line)]
    else:
        rows = [line for line in body if line.strip()]
    return ParsedPoem(title=found_title.strip() if found_title else None, rows=rows, lines=body)


def title_matches(found: str | None, wanted: str, tune: str | None = None) -> bool:
    """Rule for the Title metric: equal after :func:`normalise_title`; for ci the line may add a subtitle."""
    if not found:
        return False
    key = normalise_title(found)
    if tune:
        return key.startswith(normalise_title(tune))
    return key == normalise_title(wanted)
