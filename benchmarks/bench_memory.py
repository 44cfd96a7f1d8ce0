"""Peak memory of train-dpo steps with and without `--gradient-checkpointing`, each run in its own process.

Same model (the bundled SmolLM2-135M-Instruct), pairs (data/examples), batch and max length on both
sides. A fresh process per setting, because a process's peak resident set size (``ru_maxrss``) only
ever grows. On CPUs the host RAM is what checkpointing saves, so the report is the peak RSS and its
growth over the RSS when training starts (model, tokenizer, reference log-probs already there): that
growth is the activations plus AdamW's state. With a GPU the peak CUDA memory allocated is reported too.

Run: just bench   (or python benchmarks/bench_memory.py --batch 8 --max-length 256)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data" / "examples" / "pairs.jsonl"


def rss_mib() -> float:
    """This process's resident set size now (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(checkpointing: bool, batch: int, max_length: int, steps: int) -> dict:
    import torch

    from dpo3d.models import BUNDLED
    from dpo3d.records import write_records
    from dpo3d.training.config import LoopConfig
    from dpo3d.training.dpo import DPORunConfig, train_dpo
    from dpo3d.training.loop import LoopCallbacks

    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()][:batch]
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    write_records(rows, work / "pairs.jsonl")
    gpu = torch.cuda.is_available()
    marks: dict[str, float] = {}
    stamps: list[float] = []

    def started(start: int, total: int) -> None:
        marks["rss_at_start"] = rss_mib()
        stamps.append(time.perf_counter())
        if gpu:
            torch.cuda.reset_peak_memory_stats()

    loop = LoopConfig(out=work / "run", lr=1e-6, batch_size=batch, grad_accum=1, max_steps=steps, warmup_ratio=0.0,
                      schedule="constant", log_every=steps, cpu=not gpu, gradient_checkpointing=checkpointing)
    config = DPORunConfig(model=BUNDLED, pairs=work / "pairs.jsonl", loop=loop, max_length=max_length, probe_size=1,
                          unseen_limit=0)
    train_dpo(config, LoopCallbacks(on_start=started, on_step=lambda step: stamps.append(time.perf_counter())))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result = {"gradient_checkpointing": checkpointing, "peak_rss_mib": peak,
              "growth_mib": peak - marks["rss_at_start"],
              "step_seconds": [b - a for a, b in zip(stamps, stamps[1:], strict=False)]}
    if gpu:
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps (the first also allocates AdamW's state)")
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "on", args.batch, args.max_length, args.steps)))
        return
    results = []
    for setting in ("off", "on"):
        done = subprocess.run(
            [sys.executable, __file__, "--child", setting, "--batch", str(args.batch), "--max-length", str(args.max_length),
             "--steps", str(args.steps)],
            capture_output=True, text=True, cwd=ROOT,
        )
        if done.returncode != 0:
            raise SystemExit(f"the {setting} run failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nSmolLM2-135M train-dpo, {args.batch} pairs/step, max length {args.max_length}, {args.steps} steps, "
          "each setting in its own process")
    for result in results:
        seconds = sum(result["step_seconds"]) / len(result["step_seconds"])
        gpu = f"  peak CUDA {result['peak_cuda_mib']:7.0f} MiB" if "peak_cuda_mib" in result else ""
        name = "with checkpointing" if result["gradient_checkpointing"] else "without"
        print(f"{name:>18}: peak RSS {result['peak_rss_mib']:7.0f} MiB  (+{result['growth_mib']:6.0f} MiB during "
              f"training){gpu}  {seconds:6.2f} s/step")
    off, on = results
    print(f"checkpointing saves {off['growth_mib'] - on['growth_mib']:.0f} MiB of the training-time growth "
          f"({1 - on['growth_mib'] / off['growth_mib']:.0%})")


if __name__ == "__main__":
    main()
