"""The input layer's speed: reading + validating pairs from Parquet, and the encoding cache.

1. 100,000 preference pairs in TRL's conversational implicit-prompt form (no prompt column:
   chosen/rejected are whole conversations with a shared system and user message), written as
   one Parquet file, read through `dpo3d.data.inputs` with the pair check that splits the prompt off
   and gives each record an id: what `train-dpo --pairs pairs.parquet` does before tokenising.
   The same for the standard explicit form (prompt, chosen, rejected strings). Goal: <= 10 s.
2. The encoding cache on 20,000 real-looking pairs (GSM8K questions and solutions) with the
   bundled SmolLM2 tokenizer and its chat template: first run (tokenise and store) vs rerun
   (read back), in a fresh cache folder.

Run: python benchmarks/bench_inputs.py [PAIRS] [ENCODED_PAIRS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dpo3d.data import formats, inputs
from dpo3d.data.datasets import load_builtin
from dpo3d.data.encoding_cache import encode_cached
from dpo3d.models.loading import BUNDLED, load_tokenizer

SYSTEM = {"role": "system", "content": "You are a careful math tutor."}


def _conversation(question: str, answer: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _rows(n: int, problems: list[dict]) -> tuple[list[dict], list[dict]]:
    implicit, explicit = [], []
    for i in range(n):
        row, other = problems[i % len(problems)], problems[(i + 1) % len(problems)]
        implicit.append({"chosen": _conversation(row["question"], row["reference"]),
                         "rejected": _conversation(row["question"], other["reference"])})
        explicit.append({"prompt": row["question"], "chosen": row["reference"], "rejected": other["reference"]})
    return implicit, explicit


def bench_read(n: int, problems: list[dict], work: Path) -> None:
    implicit, explicit = _rows(n, problems)
    for name, rows in (("conversational implicit prompt", implicit), ("standard explicit prompt", explicit)):
        path = work / f"{name.split()[0]}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        start = time.perf_counter()
        records = inputs.read(str(path), formats.as_pair, ids=True)
        seconds = time.perf_counter() - start
        assert len(records) == n and records[0]["prompt"]
        size = path.stat().st_size / 2**20
        print(f"read+validate {n:,} pairs ({name}) from Parquet ({size:.0f} MiB): {seconds:.2f} s "
              f"= {n / seconds:,.0f} pairs/s (goal <= 10 s: {'met' if seconds <= 10 else 'missed'})", flush=True)


def bench_cache(n: int, problems: list[dict], work: Path) -> None:
    tokenizer = load_tokenizer(BUNDLED)
    _, explicit = _rows(n, problems)
    items = [([{"role": "user", "content": r["prompt"]}], r[side]) for r in explicit for side in ("chosen", "rejected")]
    cache = work / "encoded"
    start = time.perf_counter()
    first, hit = encode_cached(tokenizer, items, 1024, cache)
    cold = time.perf_counter() - start
    assert not hit
    start = time.perf_counter()
    again, hit = encode_cached(tokenizer, items, 1024, cache)
    warm = time.perf_counter() - start
    assert hit and again == first
    tokens = sum(len(pair) for pair in first)
    print(f"encode {n:,} pairs ({len(items):,} sequences, {tokens:,} tokens, SmolLM2 chat template): "
          f"first run {cold:.1f} s, rerun from the cache {warm:.2f} s ({cold / warm:.0f}x faster)", flush=True)


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    encoded = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    problems = load_builtin("gsm8k:train")
    with tempfile.TemporaryDirectory() as folder:
        bench_read(pairs, problems, Path(folder))
        bench_cache(encoded, problems, Path(folder))


if __name__ == "__main__":
    main()
