"""Which examples each process sees at each step: seeded, length-grouped, resumable.

A *global batch* holds ``batch_size × processes × grad_accum`` examples. The
epoch's order is a seeded shuffle; windows of several global batches are sorted
by length and cut into global batches (so a micro-batch pads little), whose
order is shuffled again. Inside a global batch, examples are sorted by length
and cut into ``grad_accum × processes`` micro-batches; process ``p`` takes
micro-batch ``m·P + p`` at accumulation step ``m``. The plan is a pure function
of (seed, epoch, lengths), so a resumed run sees exactly the same data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

WINDOW = 8  # global batches per length-sorting window


def global_batch_size(batch_size: int, processes: int, grad_accum: int) -> int:
    return batch_size * processes * grad_accum


def steps_per_epoch(n_examples: int, global_size: int) -> int:
    return max(1, math.ceil(n_examples / global_size))


def epoch_plan(lengths: Sequence[int], global_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch; the last one is filled up by wrapping around."""
    n = len(lengths)
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(n))
    rng.shuffle(order)
    steps = steps_per_epoch(n, global_size)
    order = (order * math.ceil(steps * global_size / n))[: steps * global_size]
    window = WINDOW * global_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + global_size] for i in range(0, len(chunk), global_size)]
    rng.shuffle(batches)
    return batches


def micro_batch(global_batch: Sequence[int], lengths: Sequence[int], micro: int, process: int,
                processes: int, grad_accum: int) -> list[int]:
    """The examples of one process at one accumulation step."""
    ordered = sorted(global_batch, key=lambda i: (lengths[i], i))
    size = len(ordered) // (processes * grad_accum)
    slot = micro * processes + process
    return ordered[slot * size : (slot + 1) * size]
