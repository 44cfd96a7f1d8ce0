"""Settings of the shared training loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import precision, tracking


@dataclass
class LoopConfig:
    out: Path
    lr: float = 1e-6
    batch_size: int = 8  # examples per device per micro-batch
    grad_accum: int = 2
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    warmup_ratio: float = 0.1
    schedule: str = "cosine"  # cosine | linear | constant
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    resume: bool = False
    cpu: bool = False
    mixed_precision: str | None = None  # no | bf16 | fp16 (float32 master weights, autocast); None: accelerate launch's, else no
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% more compute
    keep_host_memory: bool = False  # on the CPU, freed memory stays in the process for the next step (dpo3d.models.host_memory): faster, more peak memory
    report_to: str = "none"  # comma list of experiment trackers (tensorboard, wandb, mlflow, trackio, ...), or none
    extra: dict = field(default_factory=dict)  # the task's own settings, recorded in run_config.json
    invocation: dict | None = None  # the command line that started the run (run_config.json; --config replays it)

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
