"""Keep freed host memory in the process while training on the CPU, so each step reuses its pages.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB, and most of a training
step's activations, head chunks and gradients are larger) with a fresh ``mmap`` and returns it to the
kernel on ``free``. A CPU training step allocates gigabytes of such blocks and frees them again,
so every step faults each page in anew and the kernel zeroes it. In ``just bench`` (the bundled
model, 8 pairs a step, 2 cores) that is ~300,000 page faults and ~1.5 s of kernel time in each of
dpo3d's 14 s steps, and 3.6 million faults and ~17 s in each of TRL's 35 s ones. Inside
:func:`kept`, big blocks come from the heap and freed memory stays there (``M_MMAP_MAX = 0``,
``M_TRIM_THRESHOLD = -1``), so from the second step on the same pages serve again (a handful of
faults and ~0.1 s of kernel time a step in the same bench). The cost: the heap fragments, so the
peak resident memory of the steps is a few hundred MiB above the released one's (472 MiB in that
bench), and under a memory cap the fragmented heap runs out first (5 GiB of RLIMIT_DATA, gradient
checkpointing on: 8 pairs a step fit kept where 64 fit released when measured; re-runs in docs/benchmarks.md),
so training keeps it only when asked
(``LoopConfig.keep_host_memory``, ``--keep-host-memory``). What the run freed is returned to the
kernel when it ends (``malloc_trim``). Elsewhere than glibc, nothing changes.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters (malloc.h) and glibc's defaults for them
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _glibc():
    """The running C library when it is glibc (the only one whose mallopt this module knows), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def kept(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed host memory stays in the process for reuse. Yields whether it does."""
    libc = _glibc() if enabled else None
    if libc is None or not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, -1)):
        yield False
        return
    try:
        yield True
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
