"""Numerics of training: mixed precision, pure low-precision weights, gradient checkpointing.

Mixed precision (``bf16``/``fp16``) keeps float32 master weights and optimizer
state and runs the forward under autocast (fp16 with loss scaling), through
accelerate. Pure bf16/fp16 *weights* are another thing: AdamW's update at the
learning rates of preference training (1e-6 and below) is far smaller than half
the spacing of bf16 numbers near a weight (about 2^-8 of the weight), so most
updates round away and the model does not train. Such weights are allowed, but only when asked for,
and with a warning that says so.
"""

from __future__ import annotations

import contextlib
import os

import torch

from dpo3d.models.loading import dtype_name

MIXED_PRECISION = ("no", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(mixed_precision: str | None) -> str:
    """The mixed precision a run uses: the one asked for, else ``accelerate launch``'s (its config file or
    ``--mixed_precision``), else ``no``."""
    value = mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    if value not in MIXED_PRECISION:
        raise ValueError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got '{value}'")
    return value


def check_device(mixed_precision: str, device: torch.device) -> None:
    if mixed_precision == "fp16" and device.type == "cpu":
        raise ValueError("--mixed-precision fp16 needs a GPU (its loss scaling runs on CUDA); on CPUs use bf16")


def autocast(mixed_precision: str, device: torch.device):
    """The autocast accelerate applies for ``mixed_precision`` on ``device``, for passes outside the prepared
    model (the reference log-probs before training, PPO's frozen reference)."""
    dtype = _AUTOCAST_DTYPES.get(mixed_precision)
    if dtype is None or (dtype is torch.float16 and device.type == "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def low_precision_warning(model) -> str | None:
    """A sentence naming the effect when ``model`` is about to be trained with bf16/fp16 weights, else None."""
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad and p.is_floating_point()}
    low = sorted(dtype_name(d) for d in dtypes if d in (torch.bfloat16, torch.float16))
    if not low:
        return None
    return (
        f"training with pure {'/'.join(low)} weights (--dtype): AdamW updates smaller than half the spacing of "
        f"{'/'.join(low)} numbers near a weight (bf16: about 2^-8 of the weight, fp16: 2^-11) round away, so at "
        "small learning rates most parameters never change. For float32 master weights with low-precision "
        "compute, load float32 and pass --mixed-precision bf16 (or fp16 on GPUs)."
    )


def enable_gradient_checkpointing(model) -> None:
    """Recompute activations in the backward pass instead of storing them (HF's non-reentrant checkpointing,
    which works with DDP/FSDP under accelerate and with frozen inputs)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"--gradient-checkpointing: {type(model).__name__} does not support gradient checkpointing")
    # transformers turns the KV cache off itself in checkpointed training forwards; generation keeps it
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name for it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def run_device(cpu: bool) -> torch.device:
    """The device this process trains on (accelerate's choice; the CPU with ``--device cpu``)."""
    if cpu:
        return torch.device("cpu")
    from accelerate import PartialState

    return PartialState().device


def training_device(name: str) -> bool:
    """A trainer's ``--device``, the values ``sample`` takes: whether to train on the CPU.

    ``auto`` lets accelerate place each process (its GPU, else the CPU); ``cpu`` forces the CPU;
    ``cuda`` asks for a GPU (an error without one); ``cuda:N`` makes GPU N the current device of a
    one-process run, which accelerate then uses (several processes are placed by ``accelerate launch``).
    """
    if name in ("auto", "cpu"):
        return name == "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is not None and device.type == "mps" and torch.backends.mps.is_available():
        return False  # accelerate's own choice on an Apple GPU
    if device is None or device.type != "cuda":
        raise ValueError(f"--device {name}: a trainer takes auto, cpu, cuda or cuda:N (mps where there is one)")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible")
    if device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(f"--device {name}: under accelerate launch each process takes its own GPU "
                             "(choose them with accelerate launch --gpu_ids or CUDA_VISIBLE_DEVICES)")
        torch.cuda.set_device(device)
    return False
