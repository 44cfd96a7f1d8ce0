"""Where a `train-dpo` step's time goes: torch.profiler over a few steps, each op's own time in a class.

The bench's MFU says how much of a step the matmuls fill; this says what fills the rest. The bundled
SmolLM2-135M trains on the first --batch pairs of data/examples (the bench's setup: constant lr, no
warm-up, gradient checkpointing off), --warmup steps untimed, then --steps steps under the profiler.
Each aten op's *self* time (its own, not its children's; on the calling thread, so an op that runs
on several threads counts once, by its wall time) goes to one class by its name:

  matmul        mm, addmm, bmm, linear's matmuls (forward and backward)
  attention     scaled-dot-product attention and its softmax (forward and backward)
  head + loss   log-softmax, gather, logsumexp (the chunked LM head's log-probs and the DPO loss)
  norm          RMSNorm: its pow, mean, rsqrt (or the fused kernel)
  element-wise  mul, add, silu, neg, cat, ... (rotary embeddings, MLP gating, residuals)
  optimizer     AdamW (fused or not) and gradient clipping's norm
  memory        copies, fills, allocation, indexing, embedding lookups
  other         the rest

and the matmuls' FLOPs (the profiler's count) over their own time gives the rate they ran at, beside
the matmul peak the bench's probe reads. What is not inside an op (Python, autograd's bookkeeping) is
the step's wall time minus the ops' total.

Run: python benchmarks/profile_step.py [--precision fp32|bf16] [--steps 2] [--batch 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from _bench_common import StepsDone, load_rows, matmul_peak, quiet_probe_responses, write_json

CLASSES = (
    ("head + loss", re.compile(r"log_softmax|logsumexp|gather|nll_loss|cross_entropy|logsigmoid|log_sigmoid")),
    ("attention", re.compile(r"scaled_dot_product|flash_attention|_efficient_attention|softmax")),
    ("matmul", re.compile(r"\b(mm|addmm|bmm|matmul|linear|baddbmm|_addmm_activation)\b")),
    ("optimizer", re.compile(r"adam|_foreach_|linalg_vector_norm|clip_grad|lerp|addcmul|addcdiv|_amp_")),
    ("norm", re.compile(r"rms_norm|\bpow\b|rsqrt|\bmean\b|layer_norm")),
    ("memory", re.compile(r"copy_|\bto\b|_to_copy|empty|zeros?_?\b|fill_|clone|contiguous|index|embedding|narrow|"
                          r"slice|select|view|reshape|as_strided|transpose|\bt\b|permute|expand|resize_|set_|unsqueeze|"
                          r"squeeze|split|detach|_unsafe_view|new_")),
    ("element-wise", re.compile(r"\b(mul|add|sub|div|silu|neg|cat|sigmoid|exp|where|masked_fill|sum|cos|sin|rsub|"
                                r"threshold|relu|gelu|tanh|clamp|maximum|minimum|abs|sqrt|ne|eq|lt|gt|ge|le|cumsum|"
                                r"stack|sort|topk|max|min|argmax|any|all)_?\b|_backward")),
)


def op_class(name: str) -> str:
    """The class of an aten op by its name (``aten::mm`` -> matmul); first match wins, in CLASSES' order."""
    bare = name.split("::")[-1]
    for label, pattern in CLASSES:
        if pattern.search(bare):
            return label
    return "other"


def profile(args) -> dict:
    from dpo3d.data.records import write_records
    from dpo3d.models.loading import BUNDLED
    from dpo3d.training.config import LoopConfig
    from dpo3d.training.dpo import DPORunConfig, train_dpo
    from dpo3d.training.run_folder import LoopCallbacks

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="profile-step-"))
    write_records(load_rows(args.batch), work / "pairs.jsonl")
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True)
    stamps: list[float] = []

    def stepped(step: int) -> None:
        if step == args.warmup:
            profiler.start()
            stamps.append(time.perf_counter())
        elif step == args.warmup + args.steps:
            stamps.append(time.perf_counter())
            profiler.stop()
            raise StepsDone

    loop = LoopConfig(out=work / "run", lr=1e-6, batch_size=args.batch, grad_accum=1, max_steps=args.warmup + args.steps,
                      warmup_ratio=0.0, schedule="constant", log_every=args.warmup + args.steps, cpu=True,
                      mixed_precision="bf16" if args.precision == "bf16" else "no", gradient_checkpointing=False)
    config = DPORunConfig(model=BUNDLED, pairs=work / "pairs.jsonl", loop=loop, max_length=args.max_length,
                          probe_size=1, unseen_limit=0, **quiet_probe_responses())
    try:
        train_dpo(config, LoopCallbacks(on_step=stepped), lambda message: None)
    except StepsDone:
        pass
    wall = (stamps[1] - stamps[0]) / args.steps
    by_class: dict[str, float] = defaultdict(float)
    ops, matmul_flops = [], 0.0
    for event in profiler.key_averages():
        if not event.key.startswith("aten::"):
            continue
        seconds = event.self_cpu_time_total / 1e6 / args.steps
        label = op_class(event.key)
        by_class[label] += seconds
        ops.append((seconds, event.key, label, event.count // args.steps))
        if label == "matmul":
            matmul_flops += (event.flops or 0) / args.steps
    inside = sum(by_class.values())
    return {"precision": args.precision, "threads": args.threads, "batch": args.batch, "step_seconds": wall,
            "by_class": dict(sorted(by_class.items(), key=lambda kv: -kv[1])), "outside_ops": wall - inside,
            "matmul_flops": matmul_flops, "matmul_rate": matmul_flops / by_class["matmul"] if by_class["matmul"] else None,
            "top_ops": [{"op": key, "class": label, "seconds": s, "calls": calls}
                        for s, key, label, calls in sorted(ops, reverse=True)[:15]]}


def report(found: dict, peak: float) -> None:
    wall = found["step_seconds"]
    print(f"SmolLM2-135M train-dpo step, {found['precision']}, {found['threads']} threads, {found['batch']} pairs: "
          f"{wall:.2f} s a step under the profiler (its own cost included: compare shares, not seconds, with the bench)")
    print("\n| class | s/step | share of the step |\n|---|---|---|")
    for label, seconds in found["by_class"].items():
        print(f"| {label} | {seconds:.3f} | {seconds / wall:.1%} |")
    print(f"| outside ops (Python, autograd) | {found['outside_ops']:.3f} | {found['outside_ops'] / wall:.1%} |")
    if found["matmul_rate"]:
        print(f"\nmatmuls: {found['matmul_flops'] / 1e9:.0f} GFLOP a step at {found['matmul_rate'] / 1e9:.0f} GFLOP/s inside "
              f"the matmul ops; the {found['precision']} matmul peak read now: {peak / 1e9:.0f} GFLOP/s")
    print("\nthe 15 ops with the most own time:")
    for op in found["top_ops"]:
        print(f"  {op['seconds']:7.3f} s  {op['calls']:5d} calls  {op['class']:>12}  {op['op']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast, fp32 master weights")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args()
    found = profile(args)
    peak = matmul_peak("cpu", args.precision)
    report(found, peak)
    write_json(args.json, {**found, "matmul_peak_flops": peak})
    if args.json:
        print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
