"""The GPU check: what dpo3d does on one CUDA device, in one short run and one JSON file.

    just gpu-check                     # or: python scripts/gpu_check.py --out runs/gpu-check.json

Where CUDA is present it runs, each in its own process with its own time limit (all within ~8 minutes on one
H100), and records every number, or the error a check stopped with, in the JSON:

1. ``train_dpo``: benchmarks/bench_train_dpo.py in bf16 autocast (float32 master weights) on the bundled
   SmolLM2-135M: dpo3d against TRL's DPOTrainer (default, precomputed reference log-probs, and with
   padding_free and use_liger_kernel where TRL takes them): s/step, pairs/s, MFU, peak memory.
2. ``fsdp``: a 1-GPU launch of ``train-dpo`` through ``configs/accelerate/fsdp.yaml`` (FSDP2 over NCCL, bf16):
   does it train and save, and how long its steps took.
3. ``sample_hf`` and ``sample_vllm``: ``dpo3d sample`` on the same prompts with HF generate and with vLLM
   (tokens/s from the command's own summary line; vLLM only where it is installed).

Without CUDA it says so in one line and exits 0: nothing here measures a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: `dpo3d sample`'s summary line: "... 12345 tokens in 6.7 s (1,843 tok/s)"
SAMPLE_LINE = re.compile(r"(\d+) tokens in ([\d.]+) s \(([\d,]+) tok/s\)")
BENCH_CONFIGS = ("dpo3d", "trl", "trl-precompute", "trl-precompute-padding-free", "trl-precompute-liger")
SAMPLE_ARGS = ("--prompts", "gsm8k:test", "--limit", "64", "-n", "4", "--max-new-tokens", "128", "--temperature", "0.7",
               "--seed", "0", "--batch-size", "256")


def sample_rate(stderr: str) -> dict | None:
    """The new tokens, seconds and tokens/s of `dpo3d sample`'s summary line (the last one), or None."""
    found = SAMPLE_LINE.findall(stderr)
    if not found:
        return None
    tokens, seconds, rate = found[-1]
    # the rate as printed: sample computes it from the unrounded time (a fast run prints "0.0 s")
    return {"new_tokens": int(tokens), "seconds": float(seconds), "tokens_per_second": float(rate.replace(",", ""))}


def plan(work: Path, python: str = sys.executable) -> list[tuple[str, list[str], float]]:
    """The checks: (name, command, seconds allowed)."""
    dpo3d = [python, "-m", "dpo3d"]
    bench = [python, "benchmarks/bench_train_dpo.py", "--device", "cuda", "--precision", "bf16", "--steps", "8",
             "--warmup", "3", "--timeout", "55", "--json", str(work / "train_dpo.json")]
    for name in BENCH_CONFIGS:
        bench += ["--only", name]
    fsdp = [python, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/fsdp.yaml",
            "--num_processes", "1", "-m", "dpo3d", "train-dpo", "--pairs", "data/examples/pairs.jsonl",
            "--max-steps", "6", "--batch-size", "8", "--max-length", "384", "--lr", "1e-6", "--log-every", "2",
            "--save-every", "6", "--out", str(work / "fsdp")]
    return [
        ("train_dpo", bench, 240.0),
        ("fsdp", fsdp, 90.0),
        ("sample_hf", [*dpo3d, "sample", *SAMPLE_ARGS, "--backend", "hf", "-o", str(work / "hf.jsonl")], 45.0),
        ("sample_vllm", [*dpo3d, "sample", *SAMPLE_ARGS, "--backend", "vllm", "-o", str(work / "vllm.jsonl")], 105.0),
    ]


def run_check(name: str, command: list[str], allowed: float, work: Path) -> dict:
    began = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=allowed)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"stopped after {allowed:.0f} s", "seconds": round(time.perf_counter() - began, 1)}
    result: dict = {"ok": done.returncode == 0, "returncode": done.returncode,
                    "seconds": round(time.perf_counter() - began, 1)}
    if done.returncode != 0:
        result["error"] = " | ".join(line for line in done.stderr.strip().splitlines()[-4:] if line.strip())[-800:]
    if name == "train_dpo" and (work / "train_dpo.json").is_file():
        result["bench"] = json.loads((work / "train_dpo.json").read_text())
    if name.startswith("sample_"):
        result["rate"] = sample_rate(done.stderr)
    if name == "fsdp":
        result["saved"] = (work / "fsdp" / "summary.json").is_file()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check.json", help="the JSON of every number")
    parser.add_argument("--only", action="append", choices=["train_dpo", "fsdp", "sample_hf", "sample_vllm"],
                        help="run only these checks (repeatable)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
              "nothing to measure")
        return 0
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "checks": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        work = Path(folder)
        for name, command, allowed in plan(work):
            if args.only and name not in args.only:
                continue
            print(f"gpu-check: {name} (up to {allowed:.0f} s)", file=sys.stderr, flush=True)
            report["checks"][name] = result = run_check(name, command, allowed, work)
            print(f"gpu-check: {name}: {'ok' if result['ok'] else 'failed: ' + result.get('error', '')} "
                  f"in {result['seconds']} s", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"gpu-check: wrote {args.out}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
