"""Does CHES predict likelihood displacement on the real model? Spearman of CHES vs Δ chosen log-prob.

Razin et al. 2025 (Unintentional Unalignment, ICLR 2025) find that pairs with a higher CHES
score lose more chosen log-prob under DPO, i.e. a *negative* correlation between a pair's CHES
under the start model and the change of its chosen log-prob during training.

The steps are the commands a user runs, each through this venv's `dpo3d`:

1. `dpo3d logprobs PAIRS --ches` under the start model (CHES and chosen log-probs before),
2. a short `dpo3d train-dpo` on the same pairs (full batch by default: every pair in every step),
3. `dpo3d logprobs PAIRS` under the trained model (chosen log-probs after),

then prints, for both CHES forms, the Spearman correlation with Δ chosen log-prob (summed over
the response, and per token), with n and a permutation p-value (two-sided).

Run: python scripts/ches_validation.py [--pairs data/examples/pairs.jsonl] [--out runs/ches-validation]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dpo3d.models.loading import BUNDLED

ROOT = Path(__file__).resolve().parents[1]
PERMUTATIONS = 20_000


def dpo3d(*args: str) -> None:
    command = [sys.executable, "-m", "dpo3d", *args]
    print("$ dpo3d " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def read(path: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()]).set_index("id")


def spearman(x: pd.Series, y: pd.Series, seed: int = 0) -> tuple[float, float]:
    """Spearman's ρ (Pearson on average ranks) and a two-sided permutation p-value."""
    rx, ry = x.rank().to_numpy(), y.rank().to_numpy()
    rho = float(np.corrcoef(rx, ry)[0, 1])
    rng = np.random.default_rng(seed)
    null = np.array([np.corrcoef(rx, rng.permutation(ry))[0, 1] for _ in range(PERMUTATIONS)])
    return rho, float((np.sum(np.abs(null) >= abs(rho) - 1e-12) + 1) / (PERMUTATIONS + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=str(ROOT / "data" / "examples" / "pairs.jsonl"))
    parser.add_argument("--model", default=BUNDLED)
    parser.add_argument("--out", default=str(ROOT / "runs" / "ches-validation"))
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=3, help="batch × this = the pairs per step (12: full batch)")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=384)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    before, after, run = out / "before.jsonl", out / "after.jsonl", out / "dpo"
    length = ["--max-length", str(args.max_length)]
    dpo3d("logprobs", args.pairs, "--model", args.model, "--ches", "-b", str(args.batch_size), *length, "-o", str(before))
    dpo3d("train-dpo", "--pairs", args.pairs, "--model", args.model, "--out", str(run), "--loss", "dpo",
          "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size), "--grad-accum", str(args.grad_accum),
          "--lr", str(args.lr), "--schedule", "constant", "--warmup-ratio", "0", "--probe-size", "1", "--unseen", "0",
          "--log-every", str(args.max_steps), *length)
    dpo3d("logprobs", args.pairs, "--model", str(run), "-b", str(args.batch_size), *length, "-o", str(after))

    start, end = read(before), read(after)
    table = start[["ches", "ches_normalized"]].assign(
        d_chosen=end["chosen_logp"] - start["chosen_logp"],
        d_chosen_mean=end["chosen_logp_mean"] - start["chosen_logp_mean"],
        d_rejected=end["rejected_logp"] - start["rejected_logp"],
    )
    table.to_csv(out / "ches_vs_change.csv")
    print(table.round(4).to_string())
    print(f"\nn = {len(table)} pairs; {args.max_steps} DPO steps of {args.batch_size * args.grad_accum} pairs, lr {args.lr}")
    print(f"chosen log-prob fell for {(table.d_chosen < 0).sum()} of {len(table)} pairs "
          f"(mean Δ {table.d_chosen.mean():.3f}; rejected mean Δ {table.d_rejected.mean():.3f})")
    for score in ("ches", "ches_normalized"):
        for change in ("d_chosen", "d_chosen_mean"):
            rho, p = spearman(table[score], table[change])
            print(f"Spearman({score}, {change}) = {rho:+.3f}  (permutation p = {p:.3f}, n = {len(table)})")


if __name__ == "__main__":
    main()
