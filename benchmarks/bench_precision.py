"""The stages users wait for, in float32 and in bfloat16 weights, on this CPU: `sample` tokens/s and
`logprobs` tokens/s on the bundled SmolLM2-135M-Instruct, beside the matmul rate of each precision.

Each precision loads the model with that dtype (what `--dtype bfloat16` does for `sample`, `logprobs` and the
evaluators), samples PROMPTS GSM8K test prompts x N candidates (<= NEW_TOKENS tokens, T 0.7, seed 0) twice
(the second run checks that a seeded run repeats itself exactly), then scores the first 16 pairs of
data/examples/pairs.jsonl (chosen and rejected). Reported: tokens/s of each stage, the share of candidates that
the two precisions sample identically (they round differently, so seeded samples diverge), the mean absolute
per-token log-prob difference between them, and the CPU's bf16 units (avx512_bf16, AMX: what `--dtype auto`
reads) — without one bf16 is emulated and slower than float32.

Run: python benchmarks/bench_precision.py [PROMPTS] [N] [NEW_TOKENS]
"""

from __future__ import annotations

import os
import sys
import time

import torch
from _bench_common import matmul_peak, timed_sampling

from dpo3d.data import inputs
from dpo3d.data.datasets import load_prompts
from dpo3d.generation.sampler import SamplingConfig
from dpo3d.models.loading import BUNDLED, LoadOptions, load_model_and_tokenizer, load_tokenizer
from dpo3d.models.precision import cpu_bf16_units
from dpo3d.scoring.logprobs import score_records

PAIRS = "data/examples/pairs.jsonl"
PAIR_COUNT = 16  # its first pairs, each side scored


def score(model, tokenizer, pairs) -> tuple[list[dict], int, float]:
    began = time.perf_counter()
    scores = score_records(model, tokenizer, pairs, batch_size=8)
    tokens = sum(s["chosen_tokens"] + s["rejected_tokens"] for s in scores)
    return scores, tokens, time.perf_counter() - began


def main(prompts_count: int = 8, n: int = 4, new_tokens: int = 96) -> None:
    units = ", ".join(cpu_bf16_units()) or "none"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 units: {units}, load average {os.getloadavg()[0]:.1f}",
          file=sys.stderr)
    prompts = load_prompts("gsm8k:test", limit=prompts_count)
    pairs = list(inputs.stream(inputs.open_source(PAIRS)))[:PAIR_COUNT]
    config = SamplingConfig(n=n, temperature=0.7, max_new_tokens=new_tokens, batch_size=prompts_count * n, seed=0)
    found = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peak = matmul_peak("cpu", name, size=1024)
        model, tokenizer = load_model_and_tokenizer(BUNDLED, LoadOptions(dtype=dtype, padding_side="left"))
        timed_sampling(model, tokenizer, prompts[:1], SamplingConfig(n=1, max_new_tokens=4, batch_size=1))  # warm-up
        texts, tokens, seconds = timed_sampling(model, tokenizer, prompts, config)
        again, _, _ = timed_sampling(model, tokenizer, prompts, config)
        tokenizer_right = load_tokenizer(BUNDLED, LoadOptions(dtype=dtype))
        scores, scored_tokens, scored_seconds = score(model, tokenizer_right, pairs)
        found[name] = {"texts": texts, "scores": scores}
        print(f"{name}: matmul {peak / 1e9:6.0f} GFLOP/s | sample {tokens} tokens in {seconds:6.1f} s "
              f"= {tokens / seconds:6.1f} tok/s (seeded rerun identical: {again == texts}) | logprobs "
              f"{scored_tokens} tokens in {scored_seconds:5.1f} s = {scored_tokens / scored_seconds:7.1f} tok/s",
              file=sys.stderr)
        del model
    same = sum(a == b for a, b in zip(found["fp32"]["texts"], found["bf16"]["texts"], strict=True))
    gaps = [abs(a[f"{side}_logp_mean"] - b[f"{side}_logp_mean"]) for a, b in
            zip(found["fp32"]["scores"], found["bf16"]["scores"], strict=True) for side in ("chosen", "rejected")]
    print(f"fp32 vs bf16: {same}/{len(found['fp32']['texts'])} candidates identical; per-token log-prob differs by "
          f"{sum(gaps) / len(gaps):.4f} nats on average (max {max(gaps):.4f}) over {len(gaps)} responses",
          file=sys.stderr)


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
