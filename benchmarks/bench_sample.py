"""Tokens per second of `dpo3d sample` on the real bundled SmolLM2-135M: batched vs one at a time.

Both runs sample the same candidates' worth of work: ``N`` candidates for each of the
first ``PROMPTS`` GSM8K test prompts (boxed-answer template, chat template), at most
``NEW_TOKENS`` new tokens each, temperature 0.7, with the KV cache.

* batched: ``--batch-size BATCH -n N``: BATCH sequences per ``generate`` call;
* one at a time: ``--batch-size 1 -n 1`` over each prompt repeated N times: one sequence
  per ``generate`` call.

Tokens/s counts generated tokens (up to and including the end-of-turn token), not the
padding a batch carries after a candidate has ended. The machine's load average is
printed too: on a shared machine other processes take CPU time from both runs.

Run: python benchmarks/bench_sample.py [PROMPTS] [N] [NEW_TOKENS] [BATCH]
"""

from __future__ import annotations

import os
import sys

import torch
from _bench_common import timed_sampling

from dpo3d.data.datasets import load_prompts
from dpo3d.generation.sampler import SamplingConfig
from dpo3d.models.loading import BUNDLED, LoadOptions, load_model_and_tokenizer


def main(prompts_count: int = 4, n: int = 8, new_tokens: int = 64, batch: int = 16) -> None:
    model, tokenizer = load_model_and_tokenizer(BUNDLED, LoadOptions(padding_side="left"))
    prompts = load_prompts("gsm8k:test", limit=prompts_count)
    repeated = [{**p, "id": f"{p['id']}#{k}"} for p in prompts for k in range(n)]
    batched = SamplingConfig(n=n, temperature=0.7, max_new_tokens=new_tokens, batch_size=batch, seed=0)
    single = SamplingConfig(n=1, temperature=0.7, max_new_tokens=new_tokens, batch_size=1, seed=0)

    timed_sampling(model, tokenizer, prompts[:1], SamplingConfig(n=1, max_new_tokens=4, batch_size=1))  # warm-up
    print(f"SmolLM2-135M-Instruct float32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}; {prompts_count} GSM8K prompts x {n} candidates, "
          f"<= {new_tokens} new tokens", file=sys.stderr)
    for label, chosen, config in (
        (f"batched (--batch-size {batch} -n {n})", prompts, batched),
        ("one at a time (--batch-size 1 -n 1)", repeated, single),
    ):
        texts, tokens, seconds = timed_sampling(model, tokenizer, chosen, config)
        print(f"{label:38} {len(texts)} sequences, {tokens} tokens in {seconds:6.1f} s: "
              f"{tokens / seconds:6.1f} tokens/s", file=sys.stderr)


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
