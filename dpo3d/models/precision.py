"""The dtype inference runs in when the user leaves it to us (``--dtype auto``).

bfloat16 weights halve the bytes every matmul reads and, where the hardware has bf16 units, run the
matmuls on them: on a 2-core AMD EPYC with avx512_bf16 and no AMX tiles, sampling the bundled
SmolLM2-135M-Instruct ran 1.5-1.7x and scoring 1.6-2.0x faster than in float32
(``benchmarks/bench_precision.py``, docs/benchmarks.md); AMX tiles are faster still. Without the units
a CPU emulates bf16 and is slower than float32. So ``auto`` is bfloat16 on a CUDA device that supports
it and on a CPU with avx512_bf16 or AMX (torch's own capability checks, else ``/proc/cpuinfo``), and
float32 everywhere else. The text a seeded run samples depends on the dtype (the two round logits
differently), so a run records the dtype it resolved to, and a resume on a host that resolves otherwise
is refused rather than mixing the two. No training here: training keeps float32 weights
(``--mixed-precision bf16`` autocasts the forward instead).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dpo3d.models.loading import DTYPES

AUTO = "auto"
#: the /proc/cpuinfo flags of bf16 units: AVX-512 BF16 dot products, AMX tiles with bf16
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo_bf16_flags(text: str) -> list[str]:
    """The bf16 units /proc/cpuinfo's ``flags`` lines name (``CPU_BF16_FLAGS`` order)."""
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            found |= set(value.split()) & set(CPU_BF16_FLAGS)
    return [flag for flag in CPU_BF16_FLAGS if flag in found]


def cpu_bf16_units() -> list[str]:
    """This CPU's bf16 units by name (avx512_bf16, amx_bf16): torch's own checks, else /proc/cpuinfo."""
    checks = {"avx512_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", None),
              "amx_bf16": getattr(torch.cpu, "_is_amx_tile_supported", None)}
    if all(check is not None for check in checks.values()):
        return [name for name, check in checks.items() if check()]
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo_bf16_flags(cpuinfo.read_text(errors="replace")) if cpuinfo.is_file() else []


def has_bf16_units(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matmuls in hardware: a CUDA GPU that supports bf16, a CPU with
    avx512_bf16 or AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return device.type == "cpu" and bool(cpu_bf16_units())


#: how a command that infers tells the user what ``auto`` means (sample's --dtype, iterate's --sample-dtype)
INFERENCE_DTYPE_HELP = (
    f"{AUTO} (bfloat16 where the device has bf16 units: a CUDA GPU that supports it, a CPU with avx512_bf16 or AMX; "
    f"float32 elsewhere), {', '.join(DTYPES)}. On a 2-core EPYC with avx512_bf16 bfloat16 sampled 1.5-1.7x faster; "
    "the two dtypes sample different text from one seed, and the run records which it used."
)


def check_inference_dtype(name: str) -> None:
    """Refuse a name that is neither ``auto`` nor a dtype, naming the choices."""
    if name != AUTO and name not in DTYPES:
        raise ValueError(f"a dtype must be {AUTO} or one of {', '.join(DTYPES)}, got '{name}'")


def inference_dtype(name: str, device: torch.device) -> str:
    """``name`` as it is, or for ``auto`` the dtype inference is fastest in on ``device``: bfloat16 where it
    has bf16 units, else float32. A name that is neither ``auto`` nor a dtype is refused."""
    check_inference_dtype(name)
    if name != AUTO:
        return name
    return "bfloat16" if has_bf16_units(device) else "float32"
