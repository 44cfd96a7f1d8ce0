"""The poem study's models compared over the same test prompts: score intervals and the poems that repeat a line.

    python scripts/poem_report.py runs/study-poem

Reads OUT/eval/{Base,RLHF-PPO,DPO}.jsonl (one scored poem per test prompt each, as `study --task poem` writes
them) and prints, per model, the mean rule score with a 95% percentile-bootstrap interval over the test prompts
(10,000 resamples, seed 0), how many poems repeat one line for at least half of their lines, and how many were cut
at the length cap; then each pair of models' paired difference (the same prompts resampled together) with its
interval. The intervals cover the test set's sampling only, not the variation between training seeds.
"""

from __future__ import annotations

import random
import statistics
import sys
from collections import Counter
from pathlib import Path

from dpo3d.data.run_log import read_log

MODELS = ("Base", "RLHF-PPO", "DPO")
RESAMPLES = 10_000


def bootstrap(values: list[float], resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean over ``resamples`` resamples with replacement."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def repeats_a_line(poem: str) -> bool:
    """Whether one line makes up at least half of the poem's non-empty lines (a degenerate decode)."""
    lines = [line.strip() for line in poem.splitlines() if line.strip()]
    return bool(lines) and Counter(lines).most_common(1)[0][1] * 2 >= len(lines) and len(lines) > 1


def main(out: Path) -> None:
    scored = {m: {r["id"]: r for r in read_log(out / "eval" / f"{m}.jsonl")} for m in MODELS}
    ids = sorted(scored[MODELS[0]])
    print(f"{len(ids)} test prompts; 95% bootstrap intervals over them ({RESAMPLES:,} resamples)\n")
    print("| model | score | poems repeating a line | cut at the length cap |\n|---|---|---|---|")
    for model in MODELS:
        rows = [scored[model][i] for i in ids]
        scores = [r["score"] for r in rows]
        low, high = bootstrap(scores)
        print(f"| {model} | {statistics.fmean(scores):.3f} [{low:.3f}, {high:.3f}] | "
              f"{sum(repeats_a_line(r['completion']) for r in rows)} / {len(rows)} | "
              f"{sum(r.get('finish_reason') == 'length' for r in rows)} / {len(rows)} |")
    print()
    for a, b in (("DPO", "Base"), ("RLHF-PPO", "Base"), ("DPO", "RLHF-PPO")):
        gaps = [scored[a][i]["score"] - scored[b][i]["score"] for i in ids]
        low, high = bootstrap(gaps)
        print(f"{a} - {b}: {statistics.fmean(gaps):+.3f} [{low:+.3f}, {high:+.3f}]")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/study-poem"))
