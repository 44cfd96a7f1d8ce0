"""dpo3d `train-dpo` vs TRL's `DPOTrainer`, side by side in one run, each configuration in its own process.

Configurations: dpo3d (defaults: chunked LM head + packing), dpo3d with the host memory a step frees
kept for the next one (--keep-host-memory, dpo3d.models.host_memory), dpo3d with the
LM head 1,024 positions a chunk (the default before it became 512), dpo3d padded
(packing off), dpo3d full-logits (head_chunk None, packing off: the old path), TRL default (reference
model run in every step), TRL with precompute_ref_log_probs=True, the same with dpo3d's host-memory
setting lent to it (what TRL would gain from it), TRL precompute + padding_free=True (where TRL
refuses or ignores it, what it said is recorded instead) and TRL precompute + use_liger_kernel=True
(where liger-kernel is installed: its Triton kernels need a GPU), and dpo3d and TRL precompute in bf16
autocast with float32 master weights (dpo3d-bf16, trl-precompute-bf16: the rows beside fp32 in a CPU run,
each with its MFU against the bf16 matmul peak read in its own process), and dpo3d with --compile in both
precisions (dpo3d-compile, dpo3d-bf16-compile: each decoder layer through torch.compile; the untimed warm-up
steps pay the compilation). The dpo3d variants need
``dpo3d.scoring.forward.LogprobOptions``; on a library without it only "dpo3d" (its one path) runs.

Same model (the bundled SmolLM2-135M-Instruct), same pairs (the first --batch of data/examples), one
batch of them per step, same max length, same lr, constant schedule, no warm-up, beta 0.1, gradient
clipping at 1.0, no weight decay, gradient checkpointing off on both sides (TRL's config turns it on
by default; it trades speed for memory, which a speed comparison must not charge to TRL). float32 on
CPU; ``--device cuda`` runs the same in bf16 autocast (float32 master weights) with CUDA peaks.

Reported per configuration: seconds per step (the first --warmup steps are not timed), pairs/s,
real tokens/s, MFU of the policy's forward+backward (FLOP formula in _bench_common.py; policy-only
for every trainer, so TRL default is not credited for its reference forward, which shows in the
separate "work" column instead) against the higher of two matmul peaks its own process reads just
before and just after its steps (this host's rate drifts by tens of percent within minutes), the
peak resident memory of the process and of its training steps, the kernel time and page faults per
step, and the reference pass (the no-grad log-probs of the training pairs) in tokens/s. A separate worker
times dpo3d's scoring pass over all pairs of data/examples, chunked+packed and full-logits.

Run: just bench   (or python benchmarks/bench_train_dpo.py --steps 5 --json runs/bench/train_dpo.json)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import (
    ModelShape,
    PeakTracker,
    StepsDone,
    emit,
    fmt,
    kernel_per_step,
    kernel_reading,
    load_rows,
    markdown_table,
    matmul_peak,
    optional_logprob_options,
    quiet_probe_responses,
    run_worker,
    verdict,
    write_json,
)

CONFIGS: dict[str, dict] = {
    "dpo3d": {"kind": "dpo3d", "logprobs": {}},
    "dpo3d-kept-memory": {"kind": "dpo3d", "logprobs": {}, "keep_host_memory": True},
    "dpo3d-head-chunk-1024": {"kind": "dpo3d", "logprobs": {"head_chunk": 1024}},
    "dpo3d-padded": {"kind": "dpo3d", "logprobs": {"packing": False}},
    "dpo3d-full-logits": {"kind": "dpo3d", "logprobs": {"head_chunk": None, "packing": False}},
    "trl": {"kind": "trl", "precompute": False},
    "trl-precompute": {"kind": "trl", "precompute": True},
    "trl-precompute-kept-memory": {"kind": "trl", "precompute": True, "keep_host_memory": True},
    "trl-precompute-padding-free": {"kind": "trl", "precompute": True, "padding_free": True},
    "trl-precompute-liger": {"kind": "trl", "precompute": True, "liger": True},
    # the same two in bf16 autocast (float32 master weights), whatever the run's --precision: the rows beside fp32
    "dpo3d-bf16": {"kind": "dpo3d", "logprobs": {}, "precision": "bf16"},
    "trl-precompute-bf16": {"kind": "trl", "precompute": True, "precision": "bf16"},
    # --compile: each decoder layer through torch.compile (the first, untimed step compiles)
    "dpo3d-compile": {"kind": "dpo3d", "logprobs": {}, "compile": True},
    "dpo3d-bf16-compile": {"kind": "dpo3d", "logprobs": {}, "precision": "bf16", "compile": True},
    "logprobs": {"kind": "logprobs"},
}
BASELINE = "trl-precompute"
GOAL_SPEEDUP, GOAL_MFU, GOAL_MEMORY = 2.0, 0.60, 0.6


def _setup(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def _cuda(args) -> bool:
    return args.device == "cuda"


# ---------------------------------------------------------------- workers (each in its own process)


def timed_steps(stamps: list[float], kernel: list[tuple[float, int]], warmup: int) -> dict:
    """Seconds, kernel seconds and page faults of each step after the ``warmup`` ones (stamps and
    readings: one when training starts, one after every step)."""
    return {"step_seconds": [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:], strict=False)],
            "warmup_seconds": stamps[warmup] - stamps[0], **kernel_per_step(kernel[warmup:])}


def work_dpo3d(args, spec: dict) -> dict:
    from dpo3d.data.records import write_records
    from dpo3d.data.sequences import encode_pair
    from dpo3d.models.loading import BUNDLED, load_tokenizer
    from dpo3d.training.config import LoopConfig
    from dpo3d.training.dpo import DPORunConfig, train_dpo
    from dpo3d.training.run_folder import LoopCallbacks

    options_cls, takes_options = optional_logprob_options()
    extra, notes = dict(quiet_probe_responses()), []
    if options_cls is not None and takes_options:
        options = options_cls(**spec["logprobs"])
        extra["logprobs"] = options
        notes.append(f"head_chunk={options.head_chunk}, packing={options.packing}")
    elif spec["logprobs"]:
        return {"skipped": "this dpo3d has no dpo3d.scoring.forward.LogprobOptions on DPORunConfig: one path only"}
    else:
        notes.append("library without LogprobOptions: its only path")
    rows = load_rows(args.batch)
    tokenizer = load_tokenizer(BUNDLED)
    encoded = [encode_pair(tokenizer, r["prompt"], r[side], args.max_length) for r in rows for side in ("chosen", "rejected")]
    work = Path(tempfile.mkdtemp(prefix="bench-dpo3d-"))
    write_records(rows, work / "pairs.jsonl")
    tracker = PeakTracker(_cuda(args))
    stamps: list[float] = []
    phases: list[tuple[str, float]] = []
    memory: dict = {}

    kernel: list[tuple[float, int]] = []

    peaks: list[float] = []

    def started(start: int, total: int) -> None:
        peaks.append(matmul_peak(args.device, args.precision))
        tracker.start()
        stamps.append(time.perf_counter())
        kernel.append(kernel_reading())

    def stepped(step: int) -> None:
        stamps.append(time.perf_counter())
        kernel.append(kernel_reading())
        if step == args.steps:
            memory.update(tracker.stop())
            peaks.append(matmul_peak(args.device, args.precision))
            raise StepsDone

    loop = LoopConfig(out=work / "run", lr=args.lr, batch_size=args.batch, grad_accum=1, max_steps=args.steps,
                      warmup_ratio=0.0, schedule="constant", log_every=args.steps, cpu=not _cuda(args),
                      mixed_precision="bf16" if args.precision == "bf16" else "no", gradient_checkpointing=False,
                      **{key: spec[key] for key in ("keep_host_memory", "compile") if key in spec})
    config = DPORunConfig(model=BUNDLED, pairs=work / "pairs.jsonl", loop=loop, max_length=args.max_length,
                          probe_size=1, unseen_limit=0, **extra)
    try:
        train_dpo(config, LoopCallbacks(on_start=started, on_step=stepped),
                  lambda message: phases.append((message, time.perf_counter())))
    except StepsDone:
        pass
    begun = next(t for m, t in phases if m.startswith("reference"))
    ended = next(t for m, t in phases if t > begun)
    return {
        **timed_steps(stamps, kernel, args.warmup),
        "worker_peaks": peaks,
        "tokens_per_step": sum(map(len, encoded)),
        "predicted_per_step": sum(len(e.response_ids) for e in encoded),
        "reference_in_step": False,
        "reference_pass": {"seconds": ended - begun, "tokens": sum(map(len, encoded)), "what": "in the run, cold"},
        "memory": memory,
        "notes": notes,
    }


def work_trl(args, spec: dict) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from dpo3d.models.loading import BUNDLED, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(BUNDLED)
    model.train()
    rows = load_rows(args.batch)
    data = Dataset.from_list([
        {"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]}
        for r in rows
    ])
    tracker = PeakTracker(_cuda(args))
    stamps: list[float] = []
    kernel: list[tuple[float, int]] = []
    peaks: list[float] = []
    memory: dict = {}
    steps: list[tuple[int, int]] = []  # (real tokens, completion tokens) per training batch
    reference = {"seconds": 0.0, "tokens": 0}

    class Measured(DPOTrainer):
        def compute_loss(self, model, inputs, *rest, **kwargs):
            steps.append((int(inputs["attention_mask"].sum()), int(inputs["completion_mask"].sum())))
            return super().compute_loss(model, inputs, *rest, **kwargs)

        def compute_ref_log_probs(self, model, inputs):  # the precompute pass, batch by batch
            began = time.perf_counter()
            out = super().compute_ref_log_probs(model, inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            reference["seconds"] += time.perf_counter() - began
            reference["tokens"] += int(inputs["attention_mask"].sum())
            return out

    class Timer(TrainerCallback):
        def on_train_begin(self, args_, state, control, **kwargs):
            peaks.append(matmul_peak(args.device, args.precision))
            tracker.start()
            stamps.append(time.perf_counter())
            kernel.append(kernel_reading())

        def on_step_end(self, args_, state, control, **kwargs):
            stamps.append(time.perf_counter())
            kernel.append(kernel_reading())
            if state.global_step == args.steps:
                memory.update(tracker.stop())
                peaks.append(matmul_peak(args.device, args.precision))

    heard: list[str] = []

    class Listen(logging.Handler):
        def emit(self, record):
            heard.append(record.getMessage())

    logging.getLogger("trl").addHandler(Listen(logging.WARNING))
    if spec.get("liger"):
        import importlib.util

        if importlib.util.find_spec("liger_kernel") is None:
            return {"skipped": "liger-kernel is not installed (pip install liger-kernel; its kernels are Triton: GPU only)"}
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
        warmup_steps=0, max_length=args.max_length, use_cpu=not _cuda(args), bf16=args.precision == "bf16", fp16=False,
        gradient_checkpointing=False, logging_steps=args.steps, save_strategy="no", report_to=[], beta=0.1,
        dataloader_num_workers=0, seed=0, disable_tqdm=True, precompute_ref_log_probs=spec["precompute"],
        padding_free=spec.get("padding_free", False), use_liger_kernel=spec.get("liger", False),
    )
    trainer = Measured(model=model, args=config, train_dataset=data, processing_class=tokenizer, callbacks=[Timer()])
    notes = [f"TRL {trl.__version__}, optimizer {config.optim}"]
    if spec.get("padding_free") and not getattr(trainer, "padding_free", True):
        said = next((m for m in heard if "padding_free" in m), "padding_free switched off by the trainer")
        return {"skipped": f"TRL {trl.__version__} ignores padding_free here (it would time the precompute run "
                           f"again): {said}"}
    if spec.get("keep_host_memory"):  # dpo3d's allocator setting (dpo3d.models.host_memory) lent to TRL's run
        from dpo3d.models.host_memory import kept

        with kept() as active:
            notes.append("host memory kept (dpo3d.models.host_memory)" if active else "host memory: not glibc, unchanged")
            trainer.train()
    else:
        trainer.train()
    timed = steps[args.warmup:] or steps
    return {
        **timed_steps(stamps, kernel, args.warmup),
        "worker_peaks": peaks,
        "tokens_per_step": statistics.mean(t for t, _ in timed),
        "predicted_per_step": statistics.mean(c for _, c in timed),
        "reference_in_step": not spec["precompute"],
        "reference_pass": {**reference, "what": "precompute, cold"} if reference["tokens"] else None,
        "memory": memory,
        "notes": notes,
    }


def work_logprobs(args, spec: dict) -> dict:
    """dpo3d's no-grad scoring (the reference pass) of every pair in data/examples, warm, per logprob path."""
    import inspect

    import torch

    from dpo3d.data.sequences import encode_pair
    from dpo3d.models.loading import BUNDLED, load_model_and_tokenizer
    from dpo3d.scoring.logprobs import score_sequences

    options_cls, _ = optional_logprob_options()
    model, tokenizer = load_model_and_tokenizer(BUNDLED)
    model.to(args.device).eval()
    rows = load_rows()
    seqs = [encode_pair(tokenizer, r["prompt"], r[side], args.max_length) for r in rows for side in ("chosen", "rejected")]
    variants = {"library default": {}}
    if options_cls is not None and "options" in inspect.signature(score_sequences).parameters:
        variants = {"chunked+packed": {"options": options_cls()},
                    "full-logits padded": {"options": options_cls(head_chunk=None, packing=False)}}
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    passes = {}
    for name, kwargs in variants.items():
        with autocast:
            score_sequences(model, seqs[: 2 * args.batch], tokenizer.pad_token_id, 2 * args.batch, **kwargs)  # warm-up
            if _cuda(args):
                torch.cuda.synchronize()
            began = time.perf_counter()
            score_sequences(model, seqs, tokenizer.pad_token_id, 2 * args.batch, **kwargs)
            if _cuda(args):
                torch.cuda.synchronize()
        passes[name] = {"seconds": time.perf_counter() - began, "tokens": sum(map(len, seqs)), "sequences": len(seqs)}
    return {"passes": passes}


WORKERS = {"dpo3d": work_dpo3d, "trl": work_trl, "logprobs": work_logprobs}


def precision_of(name: str, run_precision: str) -> str:
    """The precision a configuration trains in: its own where it names one, else the run's."""
    return CONFIGS[name].get("precision", run_precision)


def planned(only: list[str] | None, run_precision: str) -> list[str]:
    """The configurations a run times: --only's, else all of them but those that would repeat another
    (a bf16 configuration in a run that is bf16 already, as on CUDA)."""
    if only:
        return list(only)
    return [name for name, spec in CONFIGS.items() if "precision" not in spec or spec["precision"] != run_precision]


def worker_main(args) -> None:
    _setup(args)
    spec = CONFIGS[args.worker]
    args.precision = precision_of(args.worker, args.precision)
    try:
        result = WORKERS[spec["kind"]](args, spec)
    except Exception as error:  # a trainer that refuses a setting: its words go into the table
        result = {"error": f"{type(error).__name__}: {error}"[:600]}
    emit({"name": args.worker, **result})


# ---------------------------------------------------------------- the parent: run, measure, report


def summarise(result: dict, shape: ModelShape, run_peak: float, batch: int) -> dict:
    """Rates and MFU of one configuration: against the higher matmul peak its own process read just
    before and after its steps (the host's rate drifts over a run), and against the run's highest."""
    if "step_seconds" not in result or not result["step_seconds"]:
        return result
    seconds = statistics.mean(result["step_seconds"])
    tokens, predicted = result["tokens_per_step"], result["predicted_per_step"]
    policy = shape.train_flops(tokens, predicted)
    work = policy + (shape.forward_flops(tokens, predicted) if result["reference_in_step"] else 0.0)
    peak = max(result.get("worker_peaks") or [run_peak])
    return {**result, "seconds_per_step": seconds, "pairs_per_s": batch / seconds, "tokens_per_s": tokens / seconds,
            "peak_flops": peak, "mfu": policy / seconds / peak, "mfu_6nt": shape.convention_flops(tokens) / seconds / peak,
            "mfu_vs_run_peak": policy / seconds / max(run_peak, peak),
            "policy_gflop_per_step": policy / 1e9, "work_gflop_per_s": work / seconds / 1e9}


def kernel_cell(result: dict) -> str:
    """Mean kernel time and page faults per timed step: what re-faulting freed memory costs a trainer."""
    if not result.get("kernel_seconds"):
        return "—"
    return f"{statistics.mean(result['kernel_seconds']):.2f} ({statistics.mean(result['page_faults']):,.0f})"


def report(results: dict[str, dict], args, peaks: dict[str, dict], shape: ModelShape) -> dict:
    cuda = _cuda(args)
    peak = peaks[args.precision] if args.precision in peaks else next(iter(peaks.values()))
    mem = "cuda_phase_peak_mib" if cuda else "phase_peak_mib"
    headers = ["config", "s/step", "pairs/s", "tokens/s", "MFU (peak GFLOP/s)", "MFU 6NT", "work GFLOP/s", "peak process MiB",
               "peak steps MiB", "steps growth MiB", "reference pass tok/s", "kernel s/step (page faults)", "notes"]
    if cuda:
        headers[7:10] = ["peak process RSS MiB", "peak CUDA steps MiB", "peak CUDA process MiB"]
    rows = []
    for name, r in results.items():
        if name == "logprobs":
            continue
        if "seconds_per_step" not in r:
            rows.append([name, *["—"] * (len(headers) - 2), r.get("skipped") or f"ERROR {r.get('error')}"])
            continue
        m, ref = r["memory"], r.get("reference_pass")
        spread = f"{r['seconds_per_step']:.2f} ({min(r['step_seconds']):.2f}–{max(r['step_seconds']):.2f})"
        memory_cells = ([fmt(m.get("process_peak_mib"), ".0f"), fmt(m.get("cuda_phase_peak_mib"), ".0f"),
                         fmt(m.get("cuda_process_peak_mib"), ".0f")] if cuda else
                        [fmt(m.get("process_peak_mib"), ".0f"), fmt(m.get("phase_peak_mib"), ".0f"),
                         fmt(m.get("phase_growth_mib"), ".0f")])
        rows.append([name, spread, f"{r['pairs_per_s']:.3f}", f"{r['tokens_per_s']:.0f}", f"{r['mfu']:.1%} ({r['peak_flops'] / 1e9:.0f})",
                     f"{r['mfu_6nt']:.1%}", f"{r['work_gflop_per_s']:.1f}", *memory_cells,
                     fmt(ref["tokens"] / ref["seconds"] if ref else None, ".0f"), kernel_cell(r),
                     "; ".join([*r.get("notes", []), "reference forward in every step" if r["reference_in_step"] else ""]).strip("; ")])
    tokens = next((r["tokens_per_step"] / args.batch for r in results.values() if "tokens_per_step" in r), float("nan"))
    read = "; ".join(f"{p} {v['before'] / 1e9:.0f} and {v['after'] / 1e9:.0f} GFLOP/s" for p, v in peaks.items())
    print(f"\nSmolLM2-135M, {args.precision} on {args.device} (rows ending -bf16: bf16 autocast, float32 master weights), "
          f"{args.batch} pairs/step (~{tokens:.0f} tokens/pair), max length {args.max_length}, "
          f"{args.steps - args.warmup} timed steps after {args.warmup} warm-up, {args.threads} threads; matmul peak of "
          f"each precision measured before and after the runs ({read}), and by each trainer's process just before and "
          f"after its steps in its own precision (the higher of those two is its MFU denominator, in brackets)\n")
    print(markdown_table(headers, rows))
    print("\nMFU: policy forward+backward, 6·N_body·T + 6·V·d·P (T real tokens, P response positions, head FLOPs at "
          "prompt positions not credited), policy-only for every trainer; MFU 6NT: 6·N·T (N all parameters). work: the "
          "policy's FLOPs plus, where the reference model runs inside the step, its forward (2·N_body·T + 2·V·d·P). "
          "Peak steps: the peak resident set during the training steps (reset when training starts); growth: over the "
          "resident set when training starts. kernel: the process's system CPU seconds per timed step and its minor page "
          "faults (mostly zeroing freshly mapped pages for tensors glibc took from, and gave back to, the kernel).")
    scoring = results.get("logprobs", {})
    if "passes" in scoring:
        print("\ndpo3d scoring pass (no grad, warm) over all pairs of data/examples:")
        for name, p in scoring["passes"].items():
            print(f"  {name:>20}: {p['tokens'] / p['seconds']:7.0f} tokens/s  ({p['tokens']} tokens, {p['sequences']} "
                  f"sequences, {p['seconds']:.2f} s)")
    elif scoring:
        print(f"\ndpo3d scoring pass: {scoring.get('error') or scoring.get('skipped')}")

    goals: dict[str, dict] = {}
    ours, base = results.get("dpo3d", {}), results.get(BASELINE, {})
    if "pairs_per_s" in ours and "pairs_per_s" in base:
        ratio = ours["pairs_per_s"] / base["pairs_per_s"]
        goals["pairs/s vs TRL precompute"] = {"value": ratio, "goal": f">= {GOAL_SPEEDUP}x", "met": ratio >= GOAL_SPEEDUP,
                                              "text": f"{ours['pairs_per_s']:.3f} / {base['pairs_per_s']:.3f} = {ratio:.2f}x"}
        a, b = ours["memory"].get(mem), base["memory"].get(mem)
        if a and b:
            goals["peak memory of the steps vs TRL precompute"] = {
                "value": a / b, "goal": f"<= {GOAL_MEMORY}x", "met": a / b <= GOAL_MEMORY,
                "text": f"{a:.0f} / {b:.0f} MiB = {a / b:.2f}x (process peaks "
                        f"{ours['memory']['process_peak_mib']:.0f} / {base['memory']['process_peak_mib']:.0f} MiB; growth "
                        f"during the steps {fmt(ours['memory'].get('phase_growth_mib'), '.0f')} / "
                        f"{fmt(base['memory'].get('phase_growth_mib'), '.0f')} MiB)"}
    if "mfu" in ours:
        goals["MFU of dpo3d's step"] = {"value": ours["mfu"], "goal": f">= {GOAL_MFU:.0%}", "met": ours["mfu"] >= GOAL_MFU,
                                        "text": f"{ours['mfu']:.1%} of {ours['peak_flops'] / 1e9:.0f} GFLOP/s read around "
                                                f"its steps; {ours['mfu_vs_run_peak']:.1%} of the run's highest reading, "
                                                f"{max(peak['used'], ours['peak_flops']) / 1e9:.0f} GFLOP/s "
                                                f"(6·N·T convention: {ours['mfu_6nt']:.1%})"}
    print(f"\nratios vs {BASELINE}:")
    for name, r in results.items():
        if "pairs_per_s" in r and "pairs_per_s" in base and name != BASELINE:
            a, b = r["memory"].get(mem), base["memory"].get(mem)
            memory = f", peak steps memory {a / b:.2f}x" if a and b else ""
            print(f"  {name:>28}: pairs/s {r['pairs_per_s'] / base['pairs_per_s']:.2f}x{memory}")
    compared = precision_ratios(results, mem)
    if compared:
        print("\nbf16 autocast against fp32, --compile against eager (pairs/s ratio; peak steps memory ratio):")
        for line in compared:
            print(f"  {line}")
    print("\ngoals:")
    for name, g in goals.items():
        print(f"  {verdict(g['met'])} {name} {g['goal']}: {g['text']}")
    if not goals:
        print("  n/a (dpo3d or the TRL precompute run did not produce timings)")
    print("  (the memory-cap demonstration, a batch x length dpo3d fits where the full-logits path does not: "
          "benchmarks/bench_memory.py)")
    return goals


def precision_ratios(results: dict[str, dict], mem: str) -> list[str]:
    """Each -bf16 row against its fp32 twin, dpo3d against TRL within bf16, each -compile row against its eager
    twin: pairs/s and peak steps memory."""
    pairs = [("dpo3d-bf16", "dpo3d"), ("trl-precompute-bf16", "trl-precompute"), ("dpo3d-bf16", "trl-precompute-bf16"),
             ("dpo3d-compile", "dpo3d"), ("dpo3d-bf16-compile", "dpo3d-bf16")]
    lines = []
    for a, b in pairs:
        ra, rb = results.get(a, {}), results.get(b, {})
        if "pairs_per_s" not in ra or "pairs_per_s" not in rb:
            continue
        ma, mb = ra["memory"].get(mem), rb["memory"].get(mem)
        memory = f"; {ma / mb:.2f}x" if ma and mb else ""
        lines.append(f"{a} / {b}: {ra['pairs_per_s'] / rb['pairs_per_s']:.2f}x{memory} "
                     f"(MFU {ra['mfu']:.1%} of {ra['peak_flops'] / 1e9:.0f} vs {rb['mfu']:.1%} of "
                     f"{rb['peak_flops'] / 1e9:.0f} GFLOP/s)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per trainer, --warmup of them untimed")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed first steps: the first allocates, the second still faults in what its heap lacked")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="default: fp32 on cpu, bf16 on cuda")
    parser.add_argument("--only", action="append", choices=list(CONFIGS), help="run only these (repeatable)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per worker")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--worker", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    args.threads = args.threads or torch.get_num_threads()
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    if args.warmup < 1 or args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup (the warm-up steps are not timed)")
    if args.worker:
        worker_main(args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    torch.set_num_threads(args.threads)
    from dpo3d.models.loading import BUNDLED, load_causal_lm

    shape = ModelShape.of(load_causal_lm(BUNDLED))
    names = planned(args.only, args.precision)
    # each precision's matmul peak, read before and after the runs, in this process
    peaks = {p: {"before": matmul_peak(args.device, p)} for p in sorted({precision_of(n, args.precision) for n in names})}
    passed = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch), "--max-length", str(args.max_length), "--lr",
              str(args.lr), "--threads", str(args.threads), "--device", args.device, "--precision", args.precision]
    results: dict[str, dict] = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_worker([__file__, "--worker", name, *passed], args.threads, args.timeout)
        state = results[name].get("error") or results[name].get("skipped") or "done"
        print(f"  {name}: {state} ({results[name]['wall_seconds']:.0f} s)", file=sys.stderr, flush=True)
    for precision, peak in peaks.items():
        peak["after"] = matmul_peak(args.device, precision)
        peak["used"] = max(peak["before"], peak["after"])
    results = {name: {**summarise(r, shape, peaks[precision_of(name, args.precision)]["used"], args.batch),
                      "precision": precision_of(name, args.precision)} for name, r in results.items()}
    goals = report(results, args, peaks, shape)
    write_json(args.json, {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                           "model": shape.to_json(), "matmul_peak_flops": peaks, "results": results, "goals": goals})
    if args.json:
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
