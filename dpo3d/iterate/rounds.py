"""The rounds of ``dpo3d iterate``: each stage a library call, each output a file, a rerun resumes.

Round r samples ``n`` candidates per prompt from its policy (the starting model, then the previous
round's trained model), scores them with the judge, pairs each prompt's best against its worst
(:func:`dpo3d.pairs.building.build_pairs`), and trains train-dpo on those pairs into its own run
folder. Round 1's pairs give the probe set every round tracks (``probe_pairs.jsonl``), so one
detector and one figure span the run (:mod:`.report`).

A stage is done when its file exists (every file is written atomically; sampling resumes chunk by
chunk); a round's training is done when its run folder has summary.json and resumes from its last
checkpoint otherwise. ``iterate_config.json`` refuses a rerun with other settings.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dpo3d.data import datasets as ds
from dpo3d.data import inputs, run_lock
from dpo3d.data import records as rec
from dpo3d.generation.sampler import SamplingConfig, load_sampler
from dpo3d.generation.sampling_run import prepare_prompts, sample_to_file
from dpo3d.judges.rewards import make_reward, needed_fields
from dpo3d.models.loading import DTYPES, LoadOptions, dtype_name, pick_device
from dpo3d.models.precision import inference_dtype
from dpo3d.pairs.building import PairConfig, build_pairs, read_candidates
from dpo3d.training.config import is_main_process
from dpo3d.training.dpo import train_dpo
from dpo3d.training.run_files import folder_state
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.watch.probes import probe_indices

from .config import IterateConfig, Layout
from .report import round_row, whole_run

SOURCE = "policy"  # the candidates' source label (build-pairs' --chosen-from/--rejected-from)
JUDGE_CHUNK = 64  # candidates scored per reward call (a progress line each)


def _nothing(*args) -> None:
    return None


@dataclass
class IterateEvents:
    """What a front end hears: a stage starting, done (with its cost) or skipped, a status line,
    sampling progress, and the callbacks of a round's training."""

    on_stage: Callable[[str, str], None] = _nothing
    on_done: Callable[[str, dict], None] = _nothing
    on_skip: Callable[[str, str], None] = _nothing
    on_status: Callable[[str], None] = _nothing
    on_progress: Callable[[str, int, int], None] = _nothing
    training: Callable[[str], LoopCallbacks] = field(default=lambda label: LoopCallbacks())


def load_iterate_prompts(config: IterateConfig) -> list[dict]:
    """Every prompt the run may sample (built-in names resolved), with ids; checked for the judge's fields."""
    source = config.prompts
    records = prepare_prompts(ds.load_prompts(source, limit=config.limit))
    need = needed_fields(config.reward)
    for number, record in enumerate(records, start=1):
        missing = [key for key in need if record.get(key) is None]
        if missing:
            raise rec.RecordError(str(source), number, f"--reward {config.reward} needs field(s) {', '.join(missing)}")
    if config.prompts_per_round is not None and len(records) < config.prompts_per_round * config.rounds:
        raise ValueError(f"{source}: {len(records)} prompts, fewer than --prompts-per-round {config.prompts_per_round} "
                         f"× --rounds {config.rounds}: give more prompts, fewer rounds, or let rounds share prompts")
    return records


def round_prompts(config: IterateConfig, prompts: list[dict], number: int) -> list[dict]:
    """Round ``number``'s prompts: its own block (--prompts-per-round), or all of them every round."""
    if config.prompts_per_round is None:
        return prompts
    size = config.prompts_per_round
    return prompts[(number - 1) * size : number * size]


def comparable(settings: dict) -> dict:
    """An iterate_config.json's settings as a rerun must repeat them: without where the run is, the device it
    samples on and --compile (they change the time, not the run), and with the settings added since an older
    dpo3d wrote it at the values that run had (before --sample-dtype the sample stage ran in --dtype)."""
    kept = {key: value for key, value in settings.items() if key not in ("out", "device")}
    if "sample_dtype" not in kept:
        kept["sample_dtype"] = dtype_name(kept.get("load", {}).get("dtype", "float32"))
    if isinstance(kept.get("train"), dict) and isinstance(kept["train"].get("loop"), dict):
        loop = {key: value for key, value in kept["train"]["loop"].items() if key != "compile"}
        kept["train"] = {**kept["train"], "loop": loop}
    return kept


def check_folder(config: IterateConfig) -> None:
    """Refuse an iterate folder written with other settings; record these ones in a new one."""
    path = Path(config.out) / "iterate_config.json"
    settings = json.loads(json.dumps(config.to_json(), default=str))
    kept = comparable(settings)
    if path.is_file():
        before = comparable(json.loads(path.read_text(encoding="utf-8")))
        changed = sorted(key if isinstance(kept.get(key), dict) else f"{key} {before.get(key)!r} -> {kept.get(key)!r}"
                         for key in set(kept) | set(before) if kept.get(key) != before.get(key))
        if changed:
            raise ValueError(f"{config.out} holds an iterate run with other settings ({', '.join(changed)}): rerun "
                             "with the same ones to continue it, or choose another --out")
        return
    rec.write_json(settings, path)


class Stage:
    """Times one stage and tells the events when it starts and ends."""

    def __init__(self, events: IterateEvents, name: str, what: str):
        self.events, self.name, self.details = events, name, {}
        events.on_stage(name, what)
        self.began = time.perf_counter()

    def done(self, **details) -> dict:
        cost = {"seconds": round(time.perf_counter() - self.began, 2), **details}
        self.events.on_done(self.name, cost)
        return cost


def sample_round(config: IterateConfig, layout: Layout, number: int, policy: str, prompts: list[dict],
                 events: IterateEvents) -> dict:
    name = f"round {number}: sample"
    stage = Stage(events, name, f"{config.n} candidates for each of {len(prompts)} prompts from {policy}")
    sampling = SamplingConfig(n=config.n, temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                              batch_size=config.sample_batch_size, seed=config.train.loop.seed + number)
    dtype = inference_dtype(config.sample_dtype, pick_device(config.device))  # auto: the device's fastest
    load = replace(config.load, padding_side="left", dtype=DTYPES[dtype])
    sampler = load_sampler(config.backend, policy, sampling, load, config.device)
    done = {"prompts": 0}

    def chunk(result) -> None:
        done["prompts"] += result.prompts_done
        events.on_progress(name, done["prompts"], len(prompts))

    summary = sample_to_file(sampler, prompts, SOURCE, layout.samples(number), resume=True,
                             settings={"model": policy, "backend": config.backend, "dtype": dtype},
                             on_start=lambda total, skipped: done.update(prompts=skipped), on_chunk=chunk)
    del sampler
    gc.collect()
    return stage.done(candidates=summary.candidates, resumed_prompts=summary.skipped_prompts)


def judge_round(config: IterateConfig, layout: Layout, number: int, reward, events: IterateEvents) -> dict:
    name = f"round {number}: judge"
    records = list(inputs.stream(inputs.open_source(layout.samples(number))))
    stage = Stage(events, name, f"{len(records)} candidates with --reward {config.reward}")
    judged: list[dict] = []
    for start in range(0, len(records), JUDGE_CHUNK):
        part = records[start : start + JUDGE_CHUNK]
        judged += [{**record, "score": float(score), "judge": config.reward} for record, score in zip(part, reward(part), strict=True)]
        events.on_progress(name, len(judged), len(records))
    rec.write_records(judged, layout.judged(number))
    return stage.done(candidates=len(judged), mean_score=round(sum(r["score"] for r in judged) / max(1, len(judged)), 4))


def pair_round(config: IterateConfig, layout: Layout, number: int, events: IterateEvents) -> dict:
    stage = Stage(events, f"round {number}: build-pairs", "each prompt's best candidate against its worst")
    pairs, stats = build_pairs(read_candidates([str(layout.judged(number))]), PairConfig(min_gap=config.min_gap))
    if not pairs:
        why = ", ".join(f"{reason}: {count}" for reason, count in stats.dropped.most_common()) or "no candidates"
        raise ValueError(f"round {number}: no prompt gave a pair ({why}); sample more prompts or candidates (-n), "
                         "or raise --temperature")
    rec.write_records(pairs, layout.pairs(number))
    return stage.done(prompts=stats.groups, pairs=len(pairs), dropped=dict(stats.dropped))


def choose_probe_pairs(config: IterateConfig, layout: Layout) -> int:
    """Round 1's seeded probe pairs (train-dpo's --probe-size of them) become every round's probe set."""
    pairs = list(inputs.stream(inputs.open_source(layout.pairs(1))))
    chosen = [pairs[i] for i in probe_indices(len(pairs), config.train.probe_size, config.train.loop.seed)]
    rec.write_records(chosen, layout.probe_pairs)
    return len(chosen)


def train_round(config: IterateConfig, layout: Layout, number: int, policy: str, events: IterateEvents) -> dict:
    folder = layout.run(number)
    state = folder_state(folder)
    if state == "restart":  # killed before its first checkpoint: start the round's training again
        shutil.rmtree(folder)
    label = f"round {number}: train-dpo"
    if state == "done":
        events.on_skip(label, f"done ({folder})")
        return {}
    reference = config.model if config.reference == "initial" and number > 1 else None
    stage = Stage(events, label, f"{config.train.loss.name} from {policy} against "
                                 f"{reference or 'its own start'}" + (" (resuming)" if state == "resume" else ""))
    run = replace(config.train, model=policy, pairs=layout.pairs(number), probe_pairs=layout.probe_pairs, ref=reference,
                  load=config.load, loop=replace(config.train.loop, out=folder, resume=state == "resume", extra={}))
    result = train_dpo(run, events.training(label), lambda message: events.on_status(f"{label}: {message}"))
    return stage.done(steps=result.steps)


def run_iterate(config: IterateConfig, events: IterateEvents | None = None, reward_factory=None) -> dict:
    """Every round, resumed where a previous run stopped; the summary (also iterate.json and iterate.md).

    ``reward_factory(config)`` gives the judge's reward function (tests pass their own)."""
    events = events or IterateEvents()
    config.validate()
    with run_lock.held(config.out, is_main_process()):  # one iterate run per folder (each round's run has its own)
        return _run(config, events, reward_factory)


def _run(config: IterateConfig, events: IterateEvents, reward_factory) -> dict:
    layout = Layout(Path(config.out))
    layout.root.mkdir(parents=True, exist_ok=True)
    check_folder(config)
    prompts = load_iterate_prompts(config)
    reward = None
    costs: dict[str, dict] = {}
    rows = []
    for number in range(1, config.rounds + 1):
        policy = config.model if number == 1 else str(layout.run(number - 1))
        if layout.judged(number).is_file():
            events.on_skip(f"round {number}: sample, judge", f"done ({layout.judged(number)})")
        else:
            costs[f"round {number}: sample"] = sample_round(
                config, layout, number, policy, round_prompts(config, prompts, number), events)
            if reward is None:
                reward = (reward_factory or _reward)(config)
            costs[f"round {number}: judge"] = judge_round(config, layout, number, reward, events)
        if layout.pairs(number).is_file():
            events.on_skip(f"round {number}: build-pairs", f"done ({layout.pairs(number)})")
        else:
            costs[f"round {number}: build-pairs"] = pair_round(config, layout, number, events)
        if number == 1 and not layout.probe_pairs.is_file():
            events.on_status(f"probe set: {choose_probe_pairs(config, layout)} of round 1's pairs, tracked in every round")
        costs[f"round {number}: train-dpo"] = train_round(config, layout, number, policy, events)
        rows.append(round_row(layout, number))
    report = whole_run(config, layout, rows, costs)
    return report


def _reward(config: IterateConfig):
    return make_reward(config.reward, pick_device(config.device), LoadOptions(
        dtype=config.load.dtype, trust_remote_code=config.load.trust_remote_code))
