"""Peak memory of train-dpo steps, each setting in its own process: gradient checkpointing on/off, and
what fits under a fixed memory cap with the chunked LM head vs the full logits.

Same model (the bundled SmolLM2-135M-Instruct), pairs (data/examples, repeated to fill a batch), batch
and max length on both sides of each comparison. A fresh process per setting, because a process's
peak resident set only ever grows.

1. Checkpointing: the peak RSS and its growth over the RSS when training starts (model, tokenizer,
   reference log-probs already there): the activations plus AdamW's state. With a GPU the peak CUDA
   memory allocated is reported too.
2. The cap (``--cap-mib``): every process runs under ``RLIMIT_DATA`` (private writable memory, what
   torch's allocator draws on), with gradient checkpointing on so the per-layer activations are small
   and the LM head's output is what grows with the batch. For dpo3d's default path (chunked head +
   packing) and the full-logits path (the model's own [tokens x vocabulary] logits, padded) the batch
   doubles until one optimizer step fails to allocate: the largest batch each completes under the cap.

Run: just bench   (or python benchmarks/bench_memory.py --cap-mib 5120 --batches 8,16,32,64)
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from _bench_common import (
    PeakTracker,
    data_mib,
    emit,
    fmt,
    load_rows,
    markdown_table,
    optional_logprob_options,
    quiet_probe_responses,
    run_worker,
)

PATHS = {"dpo3d": {}, "full-logits": {"head_chunk": None, "packing": False}}


def child(args) -> dict:
    """One train-dpo run of ``args.steps`` steps; raises (and the parent records it) when it cannot allocate."""
    import torch

    from dpo3d.data.records import write_records
    from dpo3d.models.loading import BUNDLED
    from dpo3d.training.config import LoopConfig
    from dpo3d.training.dpo import DPORunConfig, train_dpo
    from dpo3d.training.run_folder import LoopCallbacks

    rows = load_rows()
    rows = (rows * (args.batch // len(rows) + 1))[: args.batch]
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    write_records(rows, work / "pairs.jsonl")
    gpu = torch.cuda.is_available()
    tracker = PeakTracker(gpu)
    marks: dict[str, float] = {}
    stamps: list[float] = []
    extra = dict(quiet_probe_responses())
    options_cls, takes_options = optional_logprob_options()
    if args.path:
        if not takes_options:
            return {"skipped": "this dpo3d has no LogprobOptions: one path only"}
        extra["logprobs"] = options_cls(**PATHS[args.path])

    def started(start: int, total: int) -> None:
        marks["data_at_start_mib"] = data_mib()
        tracker.start()
        stamps.append(time.perf_counter())

    loop = LoopConfig(out=work / "run", lr=1e-6, batch_size=args.batch, grad_accum=1, max_steps=args.steps,
                      warmup_ratio=0.0, schedule="constant", log_every=args.steps, cpu=not gpu,
                      gradient_checkpointing=args.checkpointing == "on")
    config = DPORunConfig(model=BUNDLED, pairs=work / "pairs.jsonl", loop=loop, max_length=args.max_length,
                          probe_size=1, unseen_limit=0, **extra)
    train_dpo(config, LoopCallbacks(on_start=started, on_step=lambda step: stamps.append(time.perf_counter())))
    memory = tracker.stop()
    result = {"memory": memory, "data_at_start_mib": marks["data_at_start_mib"],
              "step_seconds": [b - a for a, b in zip(stamps, stamps[1:], strict=False)]}
    if gpu:
        result["peak_cuda_mib"] = memory["cuda_phase_peak_mib"]
    return result


def run_child(args, checkpointing: str, batch: int, path: str | None = None, cap_mib: float | None = None) -> dict:
    argv = [__file__, "--child", "--checkpointing", checkpointing, "--batch", str(batch), "--max-length",
            str(args.max_length), "--steps", str(args.steps), "--threads", str(args.threads)]
    if path:
        argv += ["--path", path]
    limit = None
    if cap_mib:
        cap = int(cap_mib * 2**20)

        def limit():
            resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    return run_worker(argv, args.threads, args.timeout, preexec=limit)


def checkpointing_report(args) -> None:
    results = {setting: run_child(args, setting, args.batch) for setting in ("off", "on")}
    print(f"\nSmolLM2-135M train-dpo, {args.batch} pairs/step, max length {args.max_length}, {args.steps} steps, "
          "each setting in its own process")
    for setting, result in results.items():
        name = "with checkpointing" if setting == "on" else "without"
        if "memory" not in result:
            print(f"{name:>18}: {result.get('error')}")
            continue
        m = result["memory"]
        seconds = sum(result["step_seconds"]) / len(result["step_seconds"])
        gpu = f"  peak CUDA {result['peak_cuda_mib']:7.0f} MiB" if "peak_cuda_mib" in result else ""
        print(f"{name:>18}: peak RSS {m['process_peak_mib']:7.0f} MiB  (+{fmt(m['phase_growth_mib'], '6.0f')} MiB during "
              f"training){gpu}  {seconds:6.2f} s/step")
    off, on = (results[s].get("memory", {}).get("phase_growth_mib") for s in ("off", "on"))
    if off and on:
        print(f"checkpointing saves {off - on:.0f} MiB of the training-time growth ({1 - on / off:.0%})")


ALLOCATION_FAILURES = ("can't allocate", "cannot allocate", "MemoryError", "out of memory")


def failure(result: dict) -> str:
    """Why a capped run failed: the allocator's own line where there is one, else the worker's error."""
    text = result.get("stderr_tail") or ""
    said = [line.strip() for line in text.splitlines() if any(mark in line for mark in ALLOCATION_FAILURES)]
    return said[-1][:160] if said else str(result.get("error"))[:160]


def cap_report(args) -> dict:
    """The batch ladder under the cap, per path; the largest batch each completes."""
    ladder = [int(b) for b in args.batches.split(",")]
    found: dict[str, dict] = {}
    for path in PATHS:
        found[path] = {"runs": {}, "largest": None}
        for batch in ladder:
            result = run_child(args, "on", batch, path, args.cap_mib)
            fits = "memory" in result
            found[path]["runs"][batch] = result
            print(f"  {path} batch {batch}: {'fits' if fits else 'FAILS: ' + failure(result)}", flush=True)
            if not fits:
                break
            found[path]["largest"] = batch
    rows = []
    for batch in ladder:
        cells = [str(batch)]
        for path in PATHS:
            result = found[path]["runs"].get(batch)
            if result is None:
                cells.append("not tried (a smaller batch failed)")
            elif "memory" in result:
                m = result["memory"]
                cells.append(f"fits: peak RSS {m['process_peak_mib']:.0f} MiB, {result['step_seconds'][-1]:.1f} s/step")
            else:
                cells.append("fails: " + failure(result))
        rows.append(cells)
    print(f"\nUnder a {args.cap_mib:.0f} MiB cap (RLIMIT_DATA), SmolLM2-135M train-dpo, gradient checkpointing on, "
          f"max length {args.max_length}, pairs of data/examples repeated, {args.steps} step(s):\n")
    print(markdown_table(["pairs/step", *PATHS], rows))
    ours, full = found["dpo3d"]["largest"], found["full-logits"]["largest"]
    print(f"\nlargest batch under the cap: dpo3d {ours}, full-logits {full}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="pairs per step (the checkpointing comparison)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps (the first also allocates AdamW's state)")
    parser.add_argument("--cap-mib", type=float, default=5120, help="RLIMIT_DATA of each capped process, MiB")
    parser.add_argument("--batches", default="8,16,32,64", help="the batch ladder tried under the cap")
    parser.add_argument("--only", choices=("checkpointing", "cap"), help="run one of the two comparisons")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", choices=("on", "off"), default="off", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=list(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    args.threads = args.threads or torch.get_num_threads()
    if args.child:
        torch.set_num_threads(args.threads)
        emit(child(args))
        return
    if args.only in (None, "checkpointing"):
        checkpointing_report(args)
    if args.only in (None, "cap"):
        cap_report(args)


if __name__ == "__main__":
    main()
