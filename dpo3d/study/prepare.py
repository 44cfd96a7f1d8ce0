"""Stages 1-3 of a study (either task): the study folder, candidates, verdicts, each scenario's pairs."""

from __future__ import annotations

from dpo3d.data import records as rec

from .config import POLICY, Layout, StudyConfig, check_folder
from .data import (
    JudgeFactory,
    judge_records,
    load_study_prompts,
    sample_candidates,
    scenario_pairs,
    sources_needed,
    split_pairs,
    write_pairs,
)
from .progress import Stages, StudyEvents


def begin(config: StudyConfig, layout: Layout) -> None:
    check_folder(config)
    layout.root.mkdir(parents=True, exist_ok=True)
    rec.write_json({"config": config.to_json(), "fingerprint": config.fingerprint_fields()},
                   layout.root / "study_config.json")


def prepare_data(config: StudyConfig, layout: Layout, stages: Stages, events: StudyEvents,
                 judge_factory: JudgeFactory) -> None:
    """Stages 1-3: candidates, verdicts, each scenario's train and held-out pairs."""
    prompts = load_study_prompts(config, "train")
    rec.write_records(prompts, layout.data / "train_prompts.jsonl")
    base = config.data_fields()
    for source in sources_needed(config):
        name = f"sample-{source}"
        if stages.done(name, base):
            events.on_skip(name, "candidates already sampled")
            continue
        what = f"{config.n} candidates × {len(prompts)} prompts from " + (
            config.model if source == POLICY else config.weak_label)
        with stages.run(name, what, base) as made:
            made.update(sample_candidates(config, prompts, source, layout.data / f"candidates_{source}.jsonl", events))
    for source in sources_needed(config):
        name = f"judge-{source}"
        if stages.done(name, base):
            events.on_skip(name, "already judged")
            continue
        with stages.run(name, f"judge the {source} candidates", base) as made:
            candidates = rec.read_records(layout.data / f"candidates_{source}.jsonl")
            judged = judge_records(judge_factory(config, len(candidates)), candidates)
            rec.write_records(judged, layout.data / f"judged_{source}.jsonl")
            made.update(candidates=len(judged), right=sum(r.get("score") == 1 for r in judged))
    settings = {**base, "scenarios": list(config.scenarios)}
    if stages.done("pairs", settings):
        events.on_skip("pairs", "pairs already built")
        return
    with stages.run("pairs", "build each scenario's pairs (build-pairs sources)", settings) as made:
        built, stats = scenario_pairs(config, [layout.data / f"judged_{s}.jsonl" for s in sources_needed(config)])
        split, shared = split_pairs(config, built)
        write_pairs(layout, split)
        for scenario, parts in split.items():
            stats[scenario].update(train=len(parts["train"]), heldout=len(parts["heldout"]))
        made.update(scenarios={str(s): v for s, v in stats.items()}, **shared)
