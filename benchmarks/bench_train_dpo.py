"""dpo3d `train-dpo` vs TRL's `DPOTrainer`, side by side in one run.

Same model (the bundled SmolLM2-135M-Instruct), same pairs (data/examples), same
batch, max length, float32 on CPU, same number of optimizer steps, no gradient
checkpointing on either side (TRL's config turns it on by default; it trades
speed for memory, which a speed comparison must not charge to TRL).
Reported: steady-state pairs/s (the first step is warm-up and is not timed),
the ratio, and model FLOP utilisation (6·params·tokens per pair for the policy's
forward+backward) against a measured fp32 matmul peak. dpo3d computes the
reference log-probs once before training (timed separately); TRL runs the
reference model inside every step, as it does by default.

Run: just bench   (or python benchmarks/bench_train_dpo.py --steps 4)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data" / "examples" / "pairs.jsonl"


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 matmul throughput in FLOP/s (the MFU denominator)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def load_rows(n: int) -> list[dict]:
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()][:n]
    if len(rows) < n:
        raise SystemExit(f"{PAIRS} has only {len(rows)} pairs")
    return rows


def bench_dpo3d(rows: list[dict], steps: int, batch: int, max_length: int, lr: float) -> dict:
    from dpo3d.models import BUNDLED
    from dpo3d.records import write_records
    from dpo3d.training.config import LoopConfig
    from dpo3d.training.dpo import DPORunConfig, train_dpo
    from dpo3d.training.loop import LoopCallbacks

    work = Path(tempfile.mkdtemp(prefix="bench-dpo3d-"))
    write_records(rows, work / "pairs.jsonl")
    stamps: list[float] = []
    phases: dict[str, float] = {}

    def status(message: str) -> None:
        phases[message] = time.perf_counter()

    loop = LoopConfig(out=work / "run", lr=lr, batch_size=batch, grad_accum=1, max_steps=steps, warmup_ratio=0.0,
                      schedule="constant", log_every=steps, cpu=True)
    config = DPORunConfig(model=BUNDLED, pairs=work / "pairs.jsonl", loop=loop, loss="dpo", max_length=max_length,
                          probe_size=1, unseen_limit=0)
    train_dpo(config, LoopCallbacks(on_step=lambda step: stamps.append(time.perf_counter())), status)
    times = sorted(phases.items(), key=lambda kv: kv[1])
    reference_seconds = next(t for m, t in times if m == "training") - next(t for m, t in times if m.startswith("reference"))
    return {"step_seconds": [b - a for a, b in zip(stamps, stamps[1:], strict=False)], "reference_seconds": reference_seconds}


def bench_trl(rows: list[dict], steps: int, batch: int, max_length: int, lr: float) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from dpo3d.models import BUNDLED, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(BUNDLED)
    data = Dataset.from_list([
        {"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]}
        for r in rows
    ])
    stamps: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    args = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        max_steps=steps, learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, max_length=max_length,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, logging_steps=steps, save_strategy="no",
        report_to=[], beta=0.1, dataloader_num_workers=0, seed=0,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[Timer()])
    trainer.train()
    return {"step_seconds": [b - a for a, b in zip(stamps, stamps[1:], strict=False)]}


def tokens_per_pair(rows: list[dict], max_length: int) -> float:
    from dpo3d.models import BUNDLED, load_tokenizer
    from dpo3d.sequences import encode_pair

    tokenizer = load_tokenizer(BUNDLED)
    total = sum(
        len(encode_pair(tokenizer, r["prompt"], r[side], max_length)) for r in rows for side in ("chosen", "rejected")
    )
    return total / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per trainer (the first is warm-up)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = load_rows(args.batch)
    peak = matmul_peak()
    params = 134_515_008  # SmolLM2-135M (tied embeddings counted once)
    per_pair_tokens = tokens_per_pair(rows, args.max_length)
    results = {
        "dpo3d": bench_dpo3d(rows, args.steps, args.batch, args.max_length, args.lr),
        "trl": bench_trl(rows, args.steps, args.batch, args.max_length, args.lr),
    }
    print(f"\nSmolLM2-135M fp32 CPU, {args.batch} pairs/step, {per_pair_tokens:.0f} tokens/pair, "
          f"{args.steps - 1} timed steps, {args.threads} threads; matmul peak {peak / 1e9:.0f} GFLOP/s")
    rates = {}
    for name, result in results.items():
        seconds = sum(result["step_seconds"]) / len(result["step_seconds"])
        rates[name] = args.batch / seconds
        mfu = 6 * params * per_pair_tokens * rates[name] / peak
        extra = f"  (+ reference log-probs once: {result['reference_seconds']:.1f} s)" if "reference_seconds" in result else ""
        print(f"{name:>6}: {seconds:6.2f} s/step  {rates[name]:6.2f} pairs/s  MFU {mfu:5.1%}{extra}")
    print(f" ratio: dpo3d / TRL = {rates['dpo3d'] / rates['trl']:.2f}x pairs/s")


if __name__ == "__main__":
    main()
