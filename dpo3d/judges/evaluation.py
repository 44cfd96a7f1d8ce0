"""The paper's evaluations as a library: math accuracy (Table 2) and poem metrics (Table 3).

- :func:`math_summary` reduces records judged by the math judge (``correct``,
  ``verdict.status``; optionally an LLM judge's ``llm_score`` 1-5) to accuracy per
  model, by MATH level and by subject, with the share of answers the LLM judge
  rated 5 and 4-or-5;
- :func:`score_poem_records` scores poem and slogan completions with the rules of
  :mod:`dpo3d.poetry`, and :func:`poem_summary` reduces them to the mean of each
  metric, by form, per model;
- :func:`eval_config` and :func:`generate` produce the completions to evaluate
  with the sampler of :mod:`dpo3d.generation.sampler` (greedy, one per prompt, by default).

The model of a record is its ``source`` (what ``dpo3d sample`` writes), else its
``model``. No typer or rich here: the commands ``eval-math`` and ``eval-poem`` are
in the command layer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from dpo3d.data import inputs
from dpo3d.data import records as rec
from dpo3d.data.schema import is_text, message_text
from dpo3d.generation.sampler import ChunkResult, SamplingConfig, sample_all
from dpo3d.generation.sampling_run import prepare_prompts
from dpo3d.judges.intervals import wilson_json
from dpo3d.models.loading import display_name
from dpo3d.poetry import POEM_METRICS, SLOGAN_METRICS, poem_form, score_poem, score_slogan

#: the label of records that name no model
UNNAMED = "completions"

#: an LLM judge's scores count as judged when they are one of these
LLM_SCORES = (1, 2, 3, 4, 5)


def model_of(record: Mapping, default: str = UNNAMED) -> str:
    """The model a record's completion came from: its ``source``, else ``model``, else ``default``."""
    for key in ("source", "model"):
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    return default


def model_labels(models: Sequence[str]) -> dict[str, str]:
    """Each model spec's label (the `source` of its completions): its short name, or the spec
    itself where two specs share a short name (two checkpoints called `final`)."""
    short = [display_name(model) for model in models]
    return {model: name if short.count(name) == 1 else model for model, name in zip(models, short, strict=True)}


def read_completions(spec: str | inputs.DataSpec, check) -> tuple[list[dict], list[int], inputs.Source]:
    """The records of a completions source (any the input layer reads), each given an id
    (``<stem>-<position>`` where it has none) and passed through ``check(record, name, position)``;
    their positions (for later errors); and the source, whose ``stem`` labels records that name no model."""
    source = inputs.open_source(spec)
    positions: list[int] = []

    def checked(record: dict, name: str, position: int):
        positions.append(position)
        return check(record, name, position)

    return inputs.read(source, checked, ids=True), positions, source

def _by_model(records: Iterable[Mapping], default: str) -> dict[str, list[Mapping]]:
    groups: dict[str, list[Mapping]] = defaultdict(list)
    for record in records:
        groups[model_of(record, default)].append(record)
    return dict(groups)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------- generation


def eval_config(
    n: int = 1, temperature: float | None = None, max_new_tokens: int = 512, batch_size: int = 32, seed: int = 0
) -> SamplingConfig:
    """The sampling of an evaluation: greedy (temperature 0) with one completion per prompt unless
    ``n`` > 1, where ``temperature`` defaults to 0.7. Raises ValueError for a bad combination."""
    if temperature is None:
        temperature = 0.0 if n == 1 else 0.7
    config = SamplingConfig(
        n=n, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed
    )
    config.validate()
    return config


def first_problems(records: Sequence[Mapping], limit: int | None) -> list[int]:
    """Indices of the records that belong to the first ``limit`` distinct problems (by ``id``, else
    one problem per record), so ``--limit`` means problems whether a file holds 1 or n answers each."""
    if limit is None:
        return list(range(len(records)))
    kept: set = set()
    indices = []
    for index, record in enumerate(records):
        key = record.get("id", f"#{index}")
        if key not in kept and len(kept) >= limit:
            continue
        kept.add(key)
        indices.append(index)
    return indices


def as_chat(record: Mapping) -> dict:
    """The record with a plain-text ``prompt`` turned into one user message, so an instruct
    model answers it through its chat template (poem and slogan prompts are plain text)."""
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        return {**record, "prompt": [{"role": "user", "content": prompt}]}
    return dict(record)


def generate(
    sampler, prompts: Iterable[Mapping], source: str, on_chunk: Callable[[ChunkResult], None] | None = None
) -> list[dict]:
    """Every prompt's completions (``sampler.config.n`` each) as candidate records labelled ``source``:
    the prompt record's fields plus ``completion``, ``sample_index``, ``source``, ``completion_tokens``
    and ``finish_reason`` (see :func:`dpo3d.generation.sampler.candidate_record`), in prompt order."""
    out: list[dict] = []
    for result in sample_all(sampler, prepare_prompts(dict(p) for p in prompts), source, on_chunk=on_chunk):
        out.extend(result.records)
    return out


# --------------------------------------------------------------------------- math


def is_correct(record: Mapping) -> bool:
    """A judged record's correctness: its ``correct`` field, else a ``score`` of 1."""
    if "correct" in record:
        return bool(record["correct"])
    return record.get("score") == 1


def _status(record: Mapping) -> str | None:
    verdict = record.get("verdict")
    return verdict.get("status") if isinstance(verdict, Mapping) else None


def _level(record: Mapping):
    meta = record.get("meta")
    return meta.get("level") if isinstance(meta, Mapping) else None


def _subject(record: Mapping):
    meta = record.get("meta")
    if not isinstance(meta, Mapping):
        return None
    return meta.get("type") or meta.get("subject")


def _accuracy_by(records: Sequence[Mapping], key: Callable[[Mapping], object]) -> dict[str, dict]:
    groups: dict[object, list[Mapping]] = defaultdict(list)
    for record in records:
        value = key(record)
        if value is not None and value != "":
            groups[value].append(record)
    # levels sort as numbers, subjects as text
    ordered = sorted(groups, key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v)))
    return {
        str(value): {
            "count": len(groups[value]),
            "correct": sum(is_correct(r) for r in groups[value]),
            "accuracy": sum(is_correct(r) for r in groups[value]) / len(groups[value]),
        }
        for value in ordered
    }


def llm_summary(records: Sequence[Mapping]) -> dict | None:
    """Shares of an LLM judge's 1-5 scores (``llm_score``), over the records it scored;
    None when no record carries the field. Records whose score is None (the judge gave
    none) are counted as ``unscored`` and left out of the shares."""
    if not any("llm_score" in record for record in records):
        return None
    scores = [record.get("llm_score") for record in records]
    judged = [int(s) for s in scores if isinstance(s, (int, float)) and not isinstance(s, bool) and s in LLM_SCORES]
    count = len(judged)
    fives, high = sum(s == 5 for s in judged), sum(s >= 4 for s in judged)
    return {
        "judged": count,
        "unscored": len(records) - count,
        "mean": _mean(judged),
        "share_5": fives / count if count else None,
        "share_5_interval": _interval(fives, count),
        "share_4_or_5": high / count if count else None,
        "share_4_or_5_interval": _interval(high, count),
        "counts": {str(s): sum(x == s for x in judged) for s in LLM_SCORES},
    }


def _interval(hits: int, count: int) -> list[float] | None:
    """The share's 95% Wilson interval over the answers the judge scored."""
    return wilson_json(hits, count)


def math_summary(judged_records: Iterable[Mapping], default_model: str = UNNAMED) -> dict:
    """Accuracy per model (the records' ``source``), overall, by MATH ``meta.level`` and by
    subject (``meta.type`` or ``meta.subject``), with counts and the share of completions with
    no final answer; with ``llm_score`` fields, the LLM judge's share of 5s and of 4-or-5s (each with its
    95% Wilson interval).

    Accuracy is over completions: with several per problem it is the mean per-sample accuracy.
    Returns ``{"models": {model: {...}}}`` in the order the models first appear.
    """
    models = {}
    for model, records in _by_model(judged_records, default_model).items():
        correct = sum(is_correct(r) for r in records)
        summary = {
            "problems": len({str(r.get("id", i)) for i, r in enumerate(records)}),
            "completions": len(records),
            "correct": correct,
            "accuracy": correct / len(records),
            "no_answer": sum(_status(r) == "no_answer" for r in records) / len(records),
            "by_level": _accuracy_by(records, _level),
            "by_subject": _accuracy_by(records, _subject),
        }
        llm = llm_summary(records)
        if llm is not None:
            summary["llm"] = llm
        models[model] = summary
    return {"models": models}


# --------------------------------------------------------------------------- poems and slogans


def task_of(record: Mapping) -> str:
    """``poem`` for a record with a ``form``, ``slogan`` for one with a slogan's constraints
    (``subject`` with ``length`` or ``banned``, see data/slogans/README.md); else ValueError."""
    if "form" in record:
        return "poem"
    if "subject" in record and ("length" in record or "banned" in record):
        return "slogan"
    raise ValueError(
        "neither a poem record (needs a 'form') nor a slogan record (needs 'subject' and 'length'/'banned')"
    )


def form_of(record: Mapping) -> str:
    """The row a record is summarised under: its poem form, or ``slogan-zh`` / ``slogan-en``."""
    if task_of(record) == "poem":
        return poem_form(record)
    return f"slogan-{record.get('language') or 'zh'}"


def score_poem_record(record: Mapping) -> dict:
    """The record with ``metrics`` (each rule's value in [0, 1]) and ``score`` (their mean) added,
    and ``task`` (poem or slogan). Raises ValueError when it cannot be scored."""
    if "completion" not in record:
        raise ValueError("missing field 'completion'")
    if not is_text(record["completion"]):
        raise ValueError("field 'completion' should be a string or a list of chat messages")
    task = task_of(record)
    completion = message_text(record["completion"])
    result = score_poem(record, completion) if task == "poem" else score_slogan(record, completion)
    metrics = {name: value for name, value in result.items() if name != "score"}
    return {**record, "task": task, "metrics": metrics, "score": result["score"]}


def score_poem_records(
    records: Iterable[Mapping], source: str = "<input>", lines: Sequence[int] | None = None
) -> list[dict]:
    """:func:`score_poem_record` on each record; a record that cannot be scored raises
    RecordError naming ``source`` and where the record is in it (``lines[i]``: a line number,
    or a table's :class:`~dpo3d.data.records.Row`, as :mod:`dpo3d.data.inputs` gives them; else its
    1-based position)."""
    out = []
    for index, record in enumerate(records):
        try:
            out.append(score_poem_record(record))
        except (ValueError, TypeError) as err:
            line = lines[index] if lines is not None else index + 1
            raise rec.RecordError(source, line, str(err)) from None
    return out


def _metric_means(records: Sequence[Mapping]) -> dict[str, float]:
    """Mean of each metric over the records it applies to, then the mean ``score``, in table order."""
    means = {}
    for name in (*POEM_METRICS, *SLOGAN_METRICS):
        values = [r["metrics"][name] for r in records if name in r.get("metrics", {})]
        if values:
            means[name] = sum(values) / len(values)
    means["score"] = sum(float(r["score"]) for r in records) / len(records)
    return means


def poem_summary(scored_records: Iterable[Mapping], default_model: str = UNNAMED) -> dict:
    """The paper's Table 3: per model, the mean of each metric (over the records it applies
    to: rhythm has no haiku, tone_pattern only Chinese forms) and of ``score``, overall and by
    form, and by task (``poem``, ``slogan``). Returns
    ``{"models": {model: {"count", "metrics", "by_task": {task: {...}}, "by_form": {form: {"count", "metrics"}}}}}``."""
    models = {}
    for model, records in _by_model(scored_records, default_model).items():
        forms: dict[str, list[Mapping]] = defaultdict(list)
        for record in records:
            forms[form_of(record)].append(record)
        tasks: dict[str, list[Mapping]] = defaultdict(list)
        for record in records:
            tasks["slogan" if form_of(record).startswith("slogan-") else "poem"].append(record)
        models[model] = {
            "count": len(records),
            "metrics": _metric_means(records),
            "by_task": {task: {"count": len(group), "metrics": _metric_means(group)} for task, group in tasks.items()},
            "by_form": {form: {"count": len(group), "metrics": _metric_means(group)} for form, group in forms.items()},
        }
    return {"models": models}


# --------------------------------------------------------------------------- poem data

#: names for the repository's prompt files (data/poems, data/slogans)
POEM_DATA = {
    "poems:test": "poems/test.jsonl",
    "poems:train": "poems/train.jsonl",
    "poems:english-test": "poems/english_test.jsonl",
    "poems:english-train": "poems/english_train.jsonl",
    "slogans:test": "slogans/test.jsonl",
    "slogans:train": "slogans/train.jsonl",
}
DEFAULT_POEM_DATA = "poems:english-test"


def data_dir() -> Path:
    """The repository's ``data`` folder (beside the ``dpo3d`` package; present in a source checkout)."""
    return Path(__file__).resolve().parents[2] / "data"


def resolve_poem_data(spec: str | Path) -> Path:
    """A name of :data:`POEM_DATA` or a JSONL path -> the file. Raises ValueError for an unknown
    name and FileNotFoundError when the file is not there."""
    text = str(spec)
    if text in POEM_DATA:
        path = data_dir() / POEM_DATA[text]
        if not path.is_file():
            raise FileNotFoundError(
                f"{text}: {path} is not there (the prompt files come with a source checkout of dpo3d)"
            )
        return path
    if text != rec.STDIO and not Path(text).is_file():
        if ":" in text and "/" not in text:
            raise ValueError(f"unknown poem data '{text}': names are {', '.join(POEM_DATA)} (or give a JSONL file)")
        raise rec.RecordError(text, None, "no such file")
    return Path(text)


def with_llm_scores(records: Sequence[Mapping], judged: Sequence[Mapping]) -> list[dict]:
    """Each record with the LLM judge's verdict on it beside the math judge's: ``llm_score`` (1-5,
    None where it gave none), ``llm_verdict`` (its reply) and, on failure, ``llm_error``."""
    if len(judged) != len(records):
        raise RuntimeError(f"the LLM judge returned {len(judged)} records for {len(records)}")
    out = []
    for record, verdict in zip(records, judged, strict=True):
        details = verdict.get("verdict") or {}
        added = {"llm_score": verdict.get("score"), "llm_verdict": details.get("reply")}
        if details.get("error"):
            added["llm_error"] = details["error"]
        out.append({**record, **added})
    return out
