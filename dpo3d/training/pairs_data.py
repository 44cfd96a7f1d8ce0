"""Preference pairs as training examples: encoded chosen/rejected, unseen candidates, probes."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..records import PAIRS, RecordError, read_records
from ..sequences import EncodedPair, encode_pair


@dataclass
class PairSet:
    records: list[dict]
    chosen: list[EncodedPair]
    rejected: list[EncodedPair]
    unseen: list[EncodedPair]  # a fixed subset of the pairs' `unseen` candidates
    unseen_pair: list[int]  # which pair each unseen candidate belongs to

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> list[int]:
        return [max(len(c), len(r)) for c, r in zip(self.chosen, self.rejected, strict=True)]


def _unseen_texts(record: dict, source: str, line: int) -> list:
    """A pair's `unseen` field: other candidates of its group (strings or candidate records)."""
    items = record.get("unseen") or []
    if not isinstance(items, list):
        raise RecordError(source, line, "field 'unseen' should be a list of candidates")
    texts = []
    for item in items:
        text = item.get("completion") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise RecordError(source, line, "each 'unseen' candidate should be a string or have a 'completion' string")
        texts.append(text)
    return texts


def load_pairs(path: str | Path, tokenizer, max_length: int, unseen_limit: int = 64, seed: int = 0) -> PairSet:
    records = read_records(path, PAIRS)
    chosen = [encode_pair(tokenizer, r["prompt"], r["chosen"], max_length) for r in records]
    rejected = [encode_pair(tokenizer, r["prompt"], r["rejected"], max_length) for r in records]
    for index, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
        if not c.response_ids or not r.response_ids:
            raise RecordError(str(path), index + 1, "a response is empty after tokenisation/truncation (raise --max-length)")
    candidates = [
        (index, text)
        for index, record in enumerate(records)
        for text in _unseen_texts(record, str(path), index + 1)
    ]
    random.Random(seed).shuffle(candidates)
    candidates = sorted(candidates[:unseen_limit])
    unseen = [encode_pair(tokenizer, records[i]["prompt"], text, max_length) for i, text in candidates]
    return PairSet(records, chosen, rejected, unseen, [i for i, _ in candidates])


def probe_indices(n: int, size: int, seed: int) -> list[int]:
    """A fixed, seeded subset of pairs whose log-probs are tracked at every logged step."""
    indices = list(range(n))
    random.Random(f"probe:{seed}").shuffle(indices)
    return sorted(indices[: min(size, n)])
