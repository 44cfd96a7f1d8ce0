"""Preference pairs from judged candidates: best against worst, per prompt.

Candidates ``{id, prompt, completion, score, source?, sample_index?, ...}`` are grouped
by ``id``. From each group the best-scored candidate of the *chosen* pool is paired
with the worst-scored one of the *rejected* pool. A pool is every candidate, the
candidates of one ``source`` label, or ``reference``: the dataset's own solution,
taken from the records' ``reference`` field. That builds the paper's four scenarios
(§5.2) from a policy's samples and another model's:

    1  chosen policy,    rejected policy     (both on-policy: the defaults)
    2  chosen reference, rejected policy     (chosen off-policy)
    3  chosen policy,    rejected other      (rejected off-policy)
    4  chosen reference, rejected other      (both off-policy)

Groups whose chosen does not beat its rejected by more than 0 (and by ``min_gap``)
are dropped, as the paper drops prompts whose samples are all right or all wrong.
Ties are broken by ``sample_index``, then input order, so the output is a function
of the input. Each pair lists the group's other candidates as ``unseen``: the
responses in neither side, where DPO's dispersion sends probability mass.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dpo3d.data import inputs
from dpo3d.data import records as rec
from dpo3d.data.schema import Schema, is_messages
from dpo3d.judges import judge_failed

REFERENCE = "reference"

#: a candidate's own fields, never passed on to its pair
CANDIDATE_FIELDS = frozenset(
    {
        "completion", "score", "source", "sample_index", "completion_tokens", "finish_reason",
        "judge", "verdict", "correct",
    }
)

CANDIDATE = Schema(
    required={"prompt": "text", "completion": "text", "score": "number"},
    optional={"source": "str", "sample_index": "int", "reference": "text"},
)


@dataclass(frozen=True)
class Candidate:
    record: dict
    where: str  # "file:line" or "file: row N", for messages
    order: int  # position over all inputs: the last tie-break

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def score(self) -> float:
        return float(self.record["score"])

    @property
    def scored(self) -> bool:
        """False for a candidate its judge could not score (``score: null``, an ``error`` in its ``verdict``)."""
        return self.record.get("score") is not None

    @property
    def source(self) -> str | None:
        return self.record.get("source")

    def rank_key(self) -> tuple:
        index = self.record.get("sample_index")
        return (index if isinstance(index, int) else math.inf, self.order)


@dataclass(frozen=True)
class PairConfig:
    chosen_from: str | None = None  # a source label, "reference", or None for every candidate
    rejected_from: str | None = None
    min_gap: float = 0.0  # keep a pair when chosen_score - rejected_score > 0 and >= min_gap
    reference_score: float = 1.0  # the score a reference solution counts as (the math judge's "right")

    def __post_init__(self) -> None:
        if self.min_gap < 0 or not math.isfinite(self.min_gap):
            raise ValueError(f"--min-gap must be a number >= 0, got {self.min_gap}")
        if not math.isfinite(self.reference_score):
            raise ValueError("--reference-score must be a finite number")


@dataclass
class PairStats:
    candidates: int = 0
    groups: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> groups
    sources: Counter = field(default_factory=Counter)  # source label -> candidates
    unscored: int = 0  # candidates left out: the judge failed on them (score null, verdict.error set)


# --------------------------------------------------------------------------- reading


def _where(name: str, position: int) -> str:
    return f"{name}: row {int(position)}" if isinstance(position, rec.Row) else f"{name}:{position}"


def read_candidates(
    specs: Sequence[str | os.PathLike | inputs.DataSpec],
    subset: str | None = None,
    columns: str | Mapping[str, str] | None = None,
) -> list[Candidate]:
    """Validated candidates from any sources :mod:`dpo3d.data.inputs` reads (``-`` = stdin), in input order.

    Raises RecordError naming the file and line (or row) of a bad record, or of a candidate
    that repeats another's (id, source, sample_index) — e.g. one file given twice.
    """
    if sum(str(spec) == rec.STDIO for spec in specs) > 1:
        raise ValueError("stdin ('-') can be read only once")
    candidates: list[Candidate] = []
    seen: dict[tuple, str] = {}
    for spec in specs:
        source = inputs.open_source(spec, subset=subset, columns=columns)

        def check(record: dict, name: str, position: int, source=source) -> dict:
            if judge_failed(record):
                # the judge could not score it (an LLM judge's failed call): checked, then left out
                CANDIDATE.check({**record, "score": 0}, name, position)
            else:
                CANDIDATE.check(record, name, position)
            if record.get("id") is None:
                raise rec.RecordError(name, position, "missing field 'id' (candidates are grouped by it)")
            record = inputs.with_id(record, source, position)
            if record["score"] is not None and not math.isfinite(record["score"]):
                raise rec.RecordError(name, position, "field 'score' is not a finite number")
            where = _where(name, position)
            if isinstance(record.get("sample_index"), int):
                key = (record["id"], record.get("source"), record["sample_index"])
                if key in seen:
                    raise rec.RecordError(
                        name, position,
                        f"duplicate candidate (id '{key[0]}', source {key[1]!r}, sample_index {key[2]}) first seen at {seen[key]}",
                    )
                seen[key] = where
            candidates.append(Candidate(record, where, len(candidates)))
            return record

        for _ in inputs.stream(source, check):
            pass
    return candidates


# --------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class _Side:
    text: object  # str or chat messages
    score: float
    source: str | None
    candidate: Candidate | None  # None for a reference solution


def _pool(group: list[Candidate], source: str | None) -> list[Candidate]:
    return [c for c in group if source is None or c.source == source]


def _best(pool: list[Candidate]) -> Candidate:
    top = max(c.score for c in pool)
    return min((c for c in pool if c.score == top), key=Candidate.rank_key)


def _worst(pool: list[Candidate]) -> Candidate:
    bottom = min(c.score for c in pool)
    return min((c for c in pool if c.score == bottom), key=Candidate.rank_key)


def _reference(group: list[Candidate], score: float) -> _Side | None:
    for candidate in group:
        text = candidate.record.get("reference")
        if isinstance(text, str) and text.strip() or is_messages(text):
            return _Side(text, score, REFERENCE, None)
    return None


def _side(candidate: Candidate) -> _Side:
    return _Side(candidate.record["completion"], candidate.score, candidate.source, candidate)


def pair_group(group: list[Candidate], config: PairConfig) -> tuple[dict | None, str | None]:
    """The pair one group gives, or ``(None, why it was dropped)``."""
    if config.chosen_from == REFERENCE:
        chosen = _reference(group, config.reference_score)
        if chosen is None:
            return None, "no reference solution"
    else:
        pool = _pool(group, config.chosen_from)
        if not pool:
            return None, f"no candidate from {config.chosen_from} to choose"
        chosen = _side(_best(pool))
    if config.rejected_from == REFERENCE:
        rejected = _reference(group, config.reference_score)
        if rejected is None:
            return None, "no reference solution"
    else:
        pool = [c for c in _pool(group, config.rejected_from) if c is not chosen.candidate]
        if not pool:
            only_one = config.rejected_from == config.chosen_from
            return None, "a single candidate" if only_one else f"no candidate from {config.rejected_from} to reject"
        rejected = _side(_worst(pool))
    gap = chosen.score - rejected.score
    if gap == 0:
        return None, "no score gap"
    if gap < 0:
        return None, "chosen scored below rejected"
    if gap < config.min_gap:
        return None, "gap below --min-gap"
    if chosen.text == rejected.text:
        return None, "chosen and rejected identical"
    return _pair(group, chosen, rejected), None


def _pair(group: list[Candidate], chosen: _Side, rejected: _Side) -> dict:
    base = (chosen.candidate or rejected.candidate or group[0]).record
    used = {id(side.candidate) for side in (chosen, rejected) if side.candidate is not None}
    unseen = [
        {
            "completion": c.record["completion"],
            "score": c.score,
            "source": c.source,
            "sample_index": c.record.get("sample_index"),
        }
        for c in sorted(group, key=lambda c: (str(c.source), *c.rank_key()))
        if id(c) not in used
    ]
    # what every candidate of the group shares belongs to the prompt (answer, meta...) and passes
    # through; what differs (token counts, finish reasons) describes one sample and does not
    passed = {
        key: value
        for key, value in base.items()
        if key not in CANDIDATE_FIELDS and all(c.record.get(key, value) == value for c in group)
    }
    return {
        **passed,
        "id": str(base["id"]),
        "prompt": base["prompt"],
        "chosen": chosen.text,
        "rejected": rejected.text,
        "chosen_score": chosen.score,
        "rejected_score": rejected.score,
        "chosen_source": chosen.source,
        "rejected_source": rejected.source,
        "chosen_sample_index": chosen.candidate.record.get("sample_index") if chosen.candidate else None,
        "rejected_sample_index": rejected.candidate.record.get("sample_index") if rejected.candidate else None,
        "unseen": unseen,
    }


def _check_sources(candidates: Sequence[Candidate], config: PairConfig) -> None:
    # a label no candidate carries is a typo, not a dataset where every group happens to lack it
    sources = {c.source for c in candidates}
    for flag, label in (("--chosen-from", config.chosen_from), ("--rejected-from", config.rejected_from)):
        if label is not None and label != REFERENCE and label not in sources:
            known = ", ".join(sorted(str(s) for s in sources if s is not None)) or "none (no 'source' fields)"
            raise ValueError(f"{flag} {label}: no candidate has that source; sources are {known}, or '{REFERENCE}'")


def build_pairs(candidates: Iterable[Candidate], config: PairConfig = PairConfig()) -> tuple[list[dict], PairStats]:
    """One pair per kept group, in order of each group's first candidate, and the tallies."""
    candidates = list(candidates)
    unscored = sum(not c.scored for c in candidates)
    candidates = [c for c in candidates if c.scored]
    _check_sources(candidates, config)
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.id, []).append(candidate)
    stats = PairStats(candidates=len(candidates), groups=len(groups), unscored=unscored)
    stats.sources.update(str(c.source) if c.source is not None else "(none)" for c in candidates)
    pairs = []
    for group in groups.values():
        pair, reason = pair_group(group, config)
        if pair is None:
            stats.dropped[reason] += 1
        else:
            pairs.append(pair)
    stats.kept = len(pairs)
    return pairs, stats
