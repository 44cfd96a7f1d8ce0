"""How often each cell saw its pairs: the passes a fair comparison keeps equal across scenarios.

A cell makes ``updates`` optimizer steps of ``batch × grad_accum × processes`` pairs, so it passes
over its pairs ``updates × global batch / pairs`` times. With ``same_prompts`` (the default) every
scenario trains on the same prompts, hence the same number of pairs, so equal steps are equal
passes; with ``--all-prompts`` a scenario with fewer pairs sees each of them more often, and the
study says so before it trains.
"""

from __future__ import annotations

from collections.abc import Mapping

from dpo3d.data import records as rec

from ..training.batches import global_batch_size
from .config import Layout, StudyConfig
from .progress import StudyEvents, world_size

#: passes more than this far apart (the largest over the smallest) are named in a warning
UNEVEN = 1.10


def passes_over_pairs(updates: int, global_batch: int, pairs: int) -> float | None:
    """Passes over ``pairs`` made by ``updates`` steps of ``global_batch`` pairs (None without pairs)."""
    return updates * global_batch / pairs if pairs else None


def planned_passes(config: StudyConfig, pairs: Mapping[int, int], processes: int) -> dict[int, float | None]:
    """Each scenario's passes over its training pairs under the study's loop settings."""
    batch = global_batch_size(config.loop.batch_size, processes, config.loop.grad_accum)
    return {scenario: passes_over_pairs(config.loop.max_steps, batch, count) for scenario, count in pairs.items()}


def uneven_passes(passes: Mapping[int, float | None]) -> str | None:
    """A line naming every scenario's passes when the largest is more than 10% above the smallest."""
    known = {scenario: value for scenario, value in passes.items() if value}
    if len(known) < 2 or max(known.values()) <= UNEVEN * min(known.values()):
        return None
    listed = ", ".join(f"scenario {scenario} {value:.2f}" for scenario, value in known.items())
    return (f"the scenarios pass over their pairs unequally ({listed} passes, more than 10% apart): they differ "
            "in how often each pair was seen as well as in the data; --same-prompts trains every scenario on "
            "the same prompts")


def warn_uneven_passes(config: StudyConfig, layout: Layout, events: StudyEvents) -> dict[int, float | None]:
    """Each scenario's planned passes over its training pairs (written by the pairs stage); a warning
    through ``events.on_status`` when they are uneven."""
    pairs = {s: len(rec.read_records(layout.pairs(s, "train"))) for s in config.scenarios}
    passes = planned_passes(config, pairs, world_size())
    message = uneven_passes(passes)
    if message is not None:
        events.on_status(f"warning: {message}")
    return passes
