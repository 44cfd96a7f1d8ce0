"""The toy on several cores: scenarios split across worker processes, results merged.

Every run of the toy is independent (its own MLP copy, element-wise Adam, its own step 1
per scenario, an init that does not depend on how many scenarios share a call), so a
sweep split by scenario gives the same numbers as one call; it only divides the wall
time by the number of cores. Workers are spawned, not forked: a fork of a process whose
OpenMP pool has run deadlocks (seen under pytest); spawning costs each worker a torch import.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace

import torch

from .train import ToyConfig, ToyHistory, ToyResult, run_toy


def _split(config: ToyConfig, parts: int) -> list[ToyConfig]:
    scenarios = list(config.scenarios)
    size = -(-len(scenarios) // parts)
    return [replace(config, scenarios=tuple(scenarios[i : i + size])) for i in range(0, len(scenarios), size)]


def merge(config: ToyConfig, parts: list[ToyResult]) -> ToyResult:
    """One ToyResult from per-scenario-group results, runs in the order ``run_toy(config)`` gives them."""
    runs, offset = [], 0
    for part in parts:
        runs += [replace(run, scenario_index=run.scenario_index + offset) for run in part.runs]
        offset += len(part.config.scenarios)
    history = ToyHistory(**{f.name: torch.cat([getattr(p.history, f.name) for p in parts]) for f in fields(ToyHistory)})
    return ToyResult(
        config=config,
        runs=runs,
        pairs=parts[0].pairs,
        targets=torch.cat([p.targets for p in parts]),
        reference_probs=torch.cat([p.reference_probs for p in parts]),
        sft_kl=torch.cat([p.sft_kl for p in parts]),
        history=history,
        stopped_at=[step for p in parts for step in p.stopped_at],
        events=[events for p in parts for events in p.events],
        actions=[actions for p in parts for actions in p.actions],
        guard_stopped_at=[step for p in parts for step in p.guard_stopped_at],
        kept_step=[step for p in parts for step in p.kept_step],
    )


def run_toy_parallel(config: ToyConfig, workers: int) -> ToyResult:
    """``run_toy`` with the scenarios spread over ``workers`` processes (1: in this process)."""
    config.validate()
    workers = min(workers, len(config.scenarios))
    if workers <= 1:
        return run_toy(config)
    configs = _split(config, workers)
    with ProcessPoolExecutor(len(configs), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(run_toy, configs))
    return merge(config, parts)
