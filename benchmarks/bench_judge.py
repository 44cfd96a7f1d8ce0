"""How many answers per second `dpo3d judge math` checks, on candidates made of real solutions.

The shape of `dpo3d sample -n 8 | dpo3d judge math`: 8 candidates for each of 250
real prompts (MATH-500 and GSM8K test, alternating), built from the dataset's own
worked solutions: the solution itself, the solution with a wrong final answer boxed
(another problem's), the solution cut before its answer (no answer), and a bare
"the final answer is \\boxed{...}", right or wrong. The pool's start-up is inside the
timing: it is what a pipeline pays.

Run: python benchmarks/bench_judge.py [CANDIDATES] [WORKERS]
"""

from __future__ import annotations

import random
import resource
import sys
import time

from dpo3d.data.datasets import load_builtin
from dpo3d.data.prompting import boxed_spans
from dpo3d.judges.math_judge import MathJudgeConfig, judge_math

PER_PROMPT = 8


def _variants(row: dict, wrong: list[str]) -> list[str]:
    reference = row["reference"]
    start, end, _ = boxed_spans(reference)[-1]
    first = boxed_spans(reference)[0][0]

    def boxed_as(answer: str) -> str:
        return reference[:start] + "\\boxed{" + answer + "}" + reference[end:]

    return [
        reference,
        boxed_as(wrong[0]),
        reference[:first].rstrip(),
        f"The final answer is $\\boxed{{{row['answer']}}}$.",
        boxed_as(wrong[1]),
        f"The final answer is $\\boxed{{{wrong[2]}}}$.",
        reference,
        reference[: len(reference) // 2],
    ]


def real_candidates(n: int = 2000, seed: int = 0) -> list[dict]:
    """``n`` candidates, ``PER_PROMPT`` per prompt, from real MATH-500 and GSM8K solutions."""
    math500, gsm8k = load_builtin("math500"), load_builtin("gsm8k:test")
    rng = random.Random(seed)
    prompts = [(math500, gsm8k)[i % 2][i // 2] for i in range(-(-n // PER_PROMPT))]
    candidates = []
    for row in prompts:
        others = [other["answer"] for other in rng.sample(math500 if row["id"].startswith("math") else gsm8k, 8)]
        wrong = [answer for answer in others if answer != row["answer"]][:3]
        for index, text in enumerate(_variants(row, wrong)):
            candidates.append({"id": row["id"], "completion": text, "answer": row["answer"], "sample_index": index})
    return candidates[:n]


def _cpu_seconds() -> float:
    # this process and its finished children (the pool's workers): on a shared machine the
    # CPU time per answer stays meaningful when the wall clock does not
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def bench_judge_math(n: int = 2000, workers: int | None = None) -> dict:
    """Judge ``n`` real candidates: answers per wall-clock second and per CPU second, how many right."""
    candidates = real_candidates(n)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    judged = judge_math(candidates, MathJudgeConfig(workers=workers))
    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
    return {
        "answers": n,
        "workers": workers,
        "seconds": round(seconds, 2),
        "answers_per_s": round(n / seconds, 1),
        "answers_per_cpu_s": round(n / cpu_seconds, 1),
        "right": sum(record["correct"] for record in judged),
    }


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else None
    result = bench_judge_math(n, workers)
    shown = "one per CPU" if workers is None else workers
    print(
        f"judge math: {result['answers_per_s']} answers/s "
        f"({result['answers']} answers in {result['seconds']} s, workers {shown}, {result['right']} right; "
        f"{result['answers_per_cpu_s']} answers per CPU-second)"
    )
