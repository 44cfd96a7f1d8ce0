"""How a study reports itself and remembers what is done.

Progress reaches the caller through :class:`StudyEvents` (the command layer draws it on
stderr); nothing here prints. A finished stage leaves a marker
``stages/<name>.json`` holding the settings it ran with and what it cost; a rerun
skips a stage whose marker matches, so a study killed anywhere continues from the
last finished stage (and a training cell from its last checkpoint).

Under ``accelerate launch`` every process runs the study. Only the first one
samples, judges, evaluates and writes tables; the others wait for the data stage's
marker, join each training run (the loops are data parallel), and stop after the
last one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dpo3d.data.records import write_json
from dpo3d.data.run_log import read_log

from ..training.run_folder import LoopCallbacks


@dataclass
class StudyEvents:
    """Callbacks of a study run; every one is optional."""

    on_stage: Callable[[str, str], None] = lambda name, what: None  # a stage starts
    on_done: Callable[[str, dict], None] = lambda name, cost: None  # it finished: seconds and what it made
    on_skip: Callable[[str, str], None] = lambda name, why: None  # already done
    on_status: Callable[[str], None] = lambda message: None  # a line of detail
    on_generate: Callable[[str, int, int], None] = lambda name, done, total: None  # prompts sampled so far
    training: Callable[[str], LoopCallbacks | None] = lambda label: None  # callbacks of one training run


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class Stages:
    """Markers of finished stages and the cost log, in ``stages/``."""

    def __init__(self, folder: Path, events: StudyEvents):
        self.folder = Path(folder)
        self.events = events

    def _marker(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def done(self, name: str, settings) -> bool:
        path = self._marker(name)
        if not path.is_file():
            return False
        saved = json.loads(path.read_text(encoding="utf-8"))
        return saved.get("settings") == json.loads(json.dumps(settings, default=str))

    def cost(self, name: str) -> dict | None:
        path = self._marker(name)
        return json.loads(path.read_text(encoding="utf-8")).get("cost") if path.is_file() else None

    @contextmanager
    def run(self, name: str, what: str, settings) -> Iterator[dict]:
        """Run a stage (the caller asked :meth:`done` first); yields a dict the stage fills with what it
        made. The marker is written only when the body finishes: a killed stage runs again."""
        self.events.on_stage(name, what)
        began = time.perf_counter()
        made: dict = {}
        yield made
        self.record(name, settings, {"seconds": round(time.perf_counter() - began, 2), **made})

    def record(self, name: str, settings, cost: dict) -> None:
        """Mark a stage done with what it cost (and log the cost)."""
        cost = json.loads(json.dumps(cost, default=str))
        write_json({"settings": json.loads(json.dumps(settings, default=str)), "cost": cost}, self._marker(name))
        with open(self.folder / "costs.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps({"stage": name, **cost}) + "\n")
        self.events.on_done(name, cost)

    def all_costs(self) -> dict[str, dict]:
        """The cost of each stage's last run (a resumed stage's latest)."""
        costs: dict[str, dict] = {}
        for record in read_log(self.folder / "costs.jsonl"):
            costs[record["stage"]] = {k: v for k, v in record.items() if k != "stage"}
        return costs


def sync(cpu: bool = False) -> None:
    """Every process of an ``accelerate launch`` waits here for the others (nothing when alone).

    The process group is the one accelerate's loops then use: NCCL on GPUs, gloo on CPUs,
    set up from the launcher's environment as accelerate itself would, which keeps it.
    """
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        gpus = torch.cuda.is_available() and not cpu
        if gpus:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpus else "gloo")
    dist.barrier()


@dataclass
class Tally:
    """Tokens and seconds of a generation stage (for its cost line)."""

    tokens: int = 0
    seconds: float = 0.0
    prompts: int = 0

    def add(self, result) -> None:
        self.tokens += result.new_tokens
        self.seconds += result.seconds
        self.prompts += result.prompts_done

    def as_cost(self) -> dict:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return {"new_tokens": self.tokens, "tokens_per_s": round(rate, 1)}
