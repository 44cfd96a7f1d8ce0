"""Settings of the shared training loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from dpo3d.config.fields import option

from . import precision, tracking


@dataclass
class LoopConfig:
    """The shared loop's settings: one field each, its default and help stated here only. Every
    trainer (sft, train-dpo, train-rm) takes them as options; run_config.json records them."""

    out: Path = option(help="Run folder.", cli=False)
    lr: float = option(1e-6, "Peak learning rate (AdamW).")
    batch_size: int = option(8, "Examples per device per micro-batch.", flags=("--batch-size", "-b"), min=1)
    grad_accum: int = option(2, "Micro-batches per optimizer step (global batch = batch × processes × this).", min=1)
    epochs: float = option(1.0, "Passes over the data (fractions allowed).")
    max_steps: int | None = option(None, "Optimizer steps; overrides --epochs.", min=1)
    warmup_ratio: float = option(0.1, "Share of the steps spent warming the learning rate up.")
    schedule: str = option("cosine", "cosine, linear or constant (after warm-up).")
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay.", min=0.0)
    max_grad_norm: float | None = option(1.0, "Clip the gradient norm (0: no clipping).", none_at=0)
    seed: int = option(0, "Seed for data order and initialisation.")
    log_every: int = option(
        1, "Log metrics every N steps (train-dpo runs its 3D probes, and every trainer its held-out evaluation, "
        "only at logged steps).", min=1)
    save_every: int = option(0, "Write a resumable checkpoint every N steps (0: only the final model).", min=0)
    resume: bool = option(False, "Continue the run in --out from its last checkpoint.", flags=("--resume/--no-resume",))
    cpu: bool = option(False, "Train on the CPU even where a GPU is (the commands' --device cpu).", cli=False)
    mixed_precision: str | None = option(
        None, "no, bf16 or fp16 (GPUs): float32 master weights and optimizer state, the forward under autocast "
        "(fp16 with loss scaling). Default: accelerate launch's setting, else no. Use bf16 on GPUs and on CPUs with "
        "bf16 units (avx512_bf16 or AMX: 1.53x the pairs/s of no on a 2-core EPYC with avx512_bf16).",
        show_default=False)
    gradient_checkpointing: bool = option(
        False, "Recompute activations in the backward pass instead of storing them: less memory, about a third "
        "more compute.", flags=("--gradient-checkpointing/--no-gradient-checkpointing",))
    compile: bool = option(
        False, "torch.compile each decoder layer for the passes with gradients (inductor fuses the norms, "
        "activations, residual adds and autocast's casts around the matmuls; generation, the reference and the "
        "log-prob probes stay eager). 1.10x the pairs/s of eager bf16 autocast at 0.72x the memory on a 2-core EPYC "
        "(fp32: 1.01x). The first step compiles, and the first of another length once more (~12 s each there); "
        "refused under FSDP and DeepSpeed.",
        flags=("--compile/--no-compile",))
    keep_host_memory: bool = option(
        False, "On the CPU, keep the memory a step frees in the process for the next step instead of returning it "
        "to the kernel (glibc): each step's activations reuse their pages instead of faulting them in again (on the "
        "bundled model, 8 pairs a step: a handful of page faults a step instead of ~300,000, 1.10x faster). Costs "
        "peak memory (a fragmented heap: up to ~0.5 GiB more there, and under a 5 GiB cap it ran out at 16 pairs a "
        "step where released fit 64, when measured); the kept memory goes back when training ends.",
        flags=("--keep-host-memory/--release-host-memory",))
    report_to: str = option(
        "none", "Experiment trackers, comma-separated: tensorboard (OUT/logs), wandb, mlflow, trackio, comet_ml, "
        "aim, clearml, dvclive, swanlab; or none. OUT/metrics.jsonl is written either way.")
    extra: dict = option(help="The task's own settings, recorded in run_config.json.", default_factory=dict, cli=False)
    invocation: dict | None = option(
        None, "The command line that started the run (run_config.json; --config replays it).", cli=False)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("--batch-size and --grad-accum must be at least 1")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError("--epochs must be positive (or give --max-steps)")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError("--schedule must be cosine, linear or constant")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("--warmup-ratio must be in [0, 1)")
        precision.resolve(self.mixed_precision)
        tracking.parse(self.report_to)

    def to_json(self) -> dict:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


def is_main_process() -> bool:
    """True on the first process of an ``accelerate launch`` (and when not launched at all)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0
