"""Preference pairs as training examples: encoded chosen/rejected and unseen candidates (train-dpo, train-rm and
the 3D probes read pairs through it). Unpaired ``{prompt, completion, label}`` examples are read as pairs of a
desirable and an undesirable example (unpaired.py), for KTO."""

from __future__ import annotations

import itertools
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

from dpo3d.data import formats, inputs
from dpo3d.data.encoding_cache import default_cache, encode_cached
from dpo3d.data.records import RecordError
from dpo3d.data.sequences import EncodedPair
from dpo3d.pairs.unpaired import rejected_prompt, unpaired_as_pairs

#: the help of the option that keeps such pairs, one text for every config that offers it
KEEP_IDENTICAL_HELP = (
    "Keep pairs whose chosen and rejected are identical (same prompt, same response): a preference loss (DPO's, a "
    "reward model's) is ln 2 on them and their gradient zero, so by default they are counted, warned about once and "
    "dropped.")


@dataclass
class PairSet:
    records: list[dict]
    chosen: list[EncodedPair]
    rejected: list[EncodedPair]
    unseen: list[EncodedPair]  # a fixed subset of the pairs' `unseen` candidates
    unseen_pair: list[int]  # which pair each unseen candidate belongs to
    identical: int = 0  # pairs dropped because their chosen and rejected are the same

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> list[int]:
        return [max(len(c), len(r)) for c, r in zip(self.chosen, self.rejected, strict=True)]


def _unseen_texts(record: dict, source: str) -> list:
    """A pair's `unseen` field: other candidates of its group (strings or candidate records)."""
    items = record.get("unseen") or []
    if not isinstance(items, list):
        raise RecordError(source, None, f"pair '{record['id']}': field 'unseen' should be a list of candidates")
    texts = []
    for item in items:
        text = item.get("completion") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise RecordError(source, None, f"pair '{record['id']}': each 'unseen' candidate should be a string or have a 'completion' string")
        texts.append(text)
    return texts


def is_identical(record: dict) -> bool:
    """Whether a pair's rejected is its chosen: the same response to the same prompt."""
    return record["chosen"] == record["rejected"] and rejected_prompt(record) == record["prompt"]


def drop_identical(records: list[dict], source: str, keep: bool = False) -> tuple[list[dict], int]:
    """The pairs whose chosen differs from their rejected, and how many did not (one warning names the
    count); ``keep``: every pair, and 0. Raises RecordError when no pair is left."""
    if keep:
        return records, 0
    kept = [record for record in records if not is_identical(record)]
    dropped = len(records) - len(kept)
    if not kept:
        raise RecordError(source, None, f"all {dropped} pairs have identical chosen and rejected: nothing to learn from "
                                        "(--keep-identical keeps them)")
    if dropped:
        first = next(record for record in records if is_identical(record))
        warnings.warn(f"{source}: dropped {dropped} of {len(records)} pairs whose chosen and rejected are identical "
                      f"(the first: '{first['id']}'): a preference loss is ln 2 on them and their gradient zero "
                      "(--keep-identical keeps them)", stacklevel=3)
    return kept, dropped


def load_pairs(
    spec: str | Path | inputs.DataSpec,
    tokenizer,
    max_length: int,
    unseen_limit: int = 64,
    seed: int = 0,
    cache: Path | None | str = "default",
    limit: int | None = None,
    keep_identical: bool = False,
) -> PairSet:
    """Pairs in any TRL preference format from any source of :mod:`dpo3d.data.inputs`, tokenised
    (through the encoding cache: ``"default"`` is ``$DPO3D_CACHE/encoded``, None disables it).
    With ``limit``, only the first ``limit`` records are read (the rest of the source is not); unpaired
    examples are paired after that (``unpaired.unpaired_as_pairs``). Pairs whose chosen and rejected are
    identical are dropped with one warning (``PairSet.identical`` counts them) unless ``keep_identical``."""
    source = inputs.open_source(spec)
    records = list(itertools.islice(inputs.stream(source, formats.as_pair_or_unpaired, ids=True), limit))
    if not records:
        raise RecordError(source.name, None, "no pairs to read" + (f" (--limit {limit})" if limit is not None else ""))
    if any(formats.is_unpaired(record) for record in records):
        records = unpaired_as_pairs(records, source.name)
    records, identical = drop_identical(records, source.name, keep_identical)
    candidates = [(index, text) for index, record in enumerate(records) for text in _unseen_texts(record, source.name)]
    random.Random(seed).shuffle(candidates)
    candidates = sorted(candidates[:unseen_limit])
    items = [(r["prompt"], r["chosen"]) for r in records] + [(rejected_prompt(r), r["rejected"]) for r in records]
    items += [(records[i]["prompt"], text) for i, text in candidates]
    encoded, _ = encode_cached(tokenizer, items, max_length, default_cache() if cache == "default" else cache)
    n = len(records)
    chosen, rejected, unseen = encoded[:n], encoded[n : 2 * n], encoded[2 * n :]
    for record, c, r in zip(records, chosen, rejected, strict=True):
        if not c.response_ids or not r.response_ids:
            raise RecordError(source.name, None, f"pair '{record['id']}': a response is empty after tokenisation/truncation (raise --max-length)")
    return PairSet(records, chosen, rejected, unseen, [i for i, _ in candidates], identical)
