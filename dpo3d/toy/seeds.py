"""One toy config over several seeds: every seed's run, then mean ± sd over the seeds of each number.

A seed sets the MLP's initial weights and the rejected response drawn for each pair,
so seeds differ in both. ``SEED_NUMBERS`` are the per-run numbers aggregated (from
``indicators()`` rows); the sd is the sample standard deviation over the seeds,
``numpy.std(values, ddof=1)`` (none for a single seed).
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np

from .indicators import indicators
from .mass import SHARES
from .train import ToyConfig, ToyResult, run_toy

#: sample standard deviation (n - 1): the spread a new seed can be expected to show
SD_DDOF = 1
#: seeds a sweep runs by default
DEFAULT_SWEEP_SEEDS = 5


def seed_list(first: int, count: int) -> tuple[int, ...]:
    """``count`` consecutive seeds from ``first``."""
    if count < 1:
        raise ValueError(f"--seeds must be at least 1, not {count}")
    return tuple(range(first, first + count))


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample sd (ddof 1) of ``values``; the sd is None for a single value."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=SD_DDOF)) if array.size > 1 else None


def _log10(value: float | None) -> float | None:
    return math.log10(value) if value is not None and value > 0 else None


def _share(when: str, name: str) -> Callable[[dict], float]:
    return lambda row: row[f"shares_{when}"][name]


#: name -> how to read it from an ``indicators()`` row; probabilities are means over prompts
SEED_NUMBERS: dict[str, Callable[[dict], float | None]] = {
    "initial_chosen": lambda row: row["initial_chosen"],
    "peak_chosen": lambda row: row["peak_chosen"],
    "peak_step": lambda row: float(row["peak_step"]),
    "final_chosen": lambda row: row["final_chosen"],
    "post_peak_fall": lambda row: row["post_peak_fall"],
    "log10_final_rejected": lambda row: _log10(row["final_rejected"]),
    "max_log_grad_ratio": lambda row: row["max_log_grad_ratio"],
    "final_margin": lambda row: row["final_margin"],
    **{f"{name.replace(' ', '_')}_{when}": _share(when, name) for name in SHARES for when in ("start", "at_peak", "end")},
    "log10_unseen_end": lambda row: _log10(row["unseen_end"]),
    "dispersion": lambda row: row["dispersion"],
    "unseen_max_gain": lambda row: row["unseen_max_gain"],
    "unseen_max_step": lambda row: float(row["unseen_max_step"]),
}


def run_seeds(config: ToyConfig, seeds: Sequence[int], workers: int = 1) -> dict[int, ToyResult]:
    """``run_toy`` once per seed (``config.seed`` replaced), on up to ``workers`` spawned processes."""
    configs = [replace(config, seed=seed) for seed in seeds]
    for each in configs:
        each.validate()
    workers = min(workers, len(configs))
    if workers <= 1:
        return {c.seed: run_toy(c) for c in configs}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(zip(seeds, pool.map(run_toy, configs), strict=True))


def per_seed_rows(results: dict[int, ToyResult]) -> list[dict]:
    """One flat row per (seed, run): seed, scenario, loss and every SEED_NUMBERS value."""
    rows = []
    for seed, result in results.items():
        for row in indicators(result):
            numbers = {name: read(row) for name, read in SEED_NUMBERS.items()}
            rows.append({"seed": seed, "run": row["run"], "scenario": row["scenario"], "loss_name": row["loss_name"], **numbers})
    return rows


def aggregate(rows: Sequence[dict], keys: Sequence[str], by: Sequence[str] = ("scenario", "loss_name")) -> list[dict]:
    """Per group of ``by`` (in first-seen order): each key's per-seed values, mean and sd (None values left out)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out = []
    for group, members in groups.items():
        entry = {**dict(zip(by, group, strict=True)), "seeds": [row["seed"] for row in members]}
        for key in keys:
            values = [row[key] for row in members if row[key] is not None]
            mean, sd = mean_sd(values) if values else (None, None)
            entry[key] = {"mean": mean, "sd": sd, "values": values}
        out.append(entry)
    return out


def cell(stat: dict, fmt: str = "{:.2f}") -> str:
    """``mean ± sd`` (just the mean for one seed, — for none)."""
    if stat["mean"] is None:
        return "—"
    mean = fmt.format(stat["mean"])
    return mean if stat["sd"] is None else f"{mean} ± {fmt.replace('+', '').format(stat['sd'])}"


def seeds_markdown(groups: Sequence[dict]) -> str:
    """Two tables, mean ± sd over the seeds per (scenario, loss): the chosen's course, and where the mass went."""
    seeds = groups[0]["seeds"] if groups else []
    note = f"Mean ± sd (sample sd, n − 1) over {len(seeds)} seeds ({', '.join(map(str, seeds))}); probabilities are means over the 4 prompts.\n\n"
    first = [
        "| scenario | loss | chosen start | chosen peak | peak step | chosen final | post-peak fall | log10 rejected x2 final | max ln\\|g2/g1\\| |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    second = [
        "| scenario | loss | own chosen start → end | rejected 5–8 start → end | other prompts' chosen start → peak → end "
        "| unseen 9–10 start → log10 end | dispersion (Δ unseen 9–10) | unseen 9–10 largest gain (step) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        head = f"| {g['scenario']} | {g['loss_name']} "
        first.append(
            head + f"| {cell(g['initial_chosen'])} | {cell(g['peak_chosen'])} | {cell(g['peak_step'], '{:.0f}')} "
            f"| {cell(g['final_chosen'])} | {cell(g['post_peak_fall'])} | {cell(g['log10_final_rejected'], '{:.1f}')} "
            f"| {cell(g['max_log_grad_ratio'], '{:.1f}')} |"
        )
        second.append(
            head + f"| {cell(g['own_chosen_start'])} → {cell(g['own_chosen_end'])} "
            f"| {cell(g['rejected_start'])} → {cell(g['rejected_end'], '{:.0e}')} "
            f"| {cell(g['other_chosen_start'])} → {cell(g['other_chosen_at_peak'])} → {cell(g['other_chosen_end'])} "
            f"| {cell(g['unseen_start'])} → {cell(g['log10_unseen_end'], '{:.1f}')} | {cell(g['dispersion'], '{:+.3f}')} "
            f"| {cell(g['unseen_max_gain'], '{:+.3f}')} ({cell(g['unseen_max_step'], '{:.0f}')}) |"
        )
    return note + "\n".join(first) + "\n\n" + "\n".join(second) + "\n"
