"""`dpo3d study`: the paper's §5 grid as one resumable run.

Stages, each skipped when its marker says it is done (see :mod:`.progress`):

1. sample ``n`` candidates per training prompt from the policy, and (scenarios 3, 4) from
   the off-policy model: ``weak_model``, or the policy itself at ``weak_temperature``;
2. judge them (math-verify);
3. build each scenario's pairs with build-pairs' sources and split off the held-out prompts;
4. train every (scenario, loss) cell, and the reward model of Fig. 4 on scenario 1;
5. evaluate the start and every cell on the test prompts, scoring the log-probs Table 1 needs;
6. write study.json, study.md, probes.png and fig4.png.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from dpo3d.data import records as rec
from dpo3d.data import run_lock

from .cells import pairs_fingerprint, state, train_cell, train_reward_model
from .config import START, Layout, StudyConfig, cell_label, slug
from .data import (
    JudgeFactory,
    default_judge,
    load_study_prompts,
    sources_needed,
)
from .evaluate import evaluate_model, source_accuracy, start_score_sets
from .fairness import passes_over_pairs, warn_uneven_passes
from .figures import figure4, plot_probes
from .poem import run_poem_study
from .prepare import begin, prepare_data
from .progress import Stages, StudyEvents, is_main, sync
from .tables import detector_events, markdown, sources, table1, table2, table10


def train_all(config: StudyConfig, layout: Layout, stages: Stages, events: StudyEvents) -> None:
    """Stage 4: every cell (all processes take part), then Fig. 4's reward model."""
    runs = [(s, loss) for loss in config.losses for s in config.scenarios]
    for number, (scenario, loss) in enumerate(runs, start=1):
        label = cell_label(scenario, loss)
        if is_main() and state(layout.cell(scenario, loss), pairs_fingerprint(layout, scenario)) != "done":
            events.on_stage(f"train-{label}", f"cell {number}/{len(runs)}: {loss} on scenario {scenario}")
        began = time.perf_counter()
        if train_cell(config, layout, scenario, loss, events) and is_main():
            stages.record(f"train-{label}", {}, {"seconds": round(time.perf_counter() - began, 2), "steps": config.loop.max_steps})
    if config.reward_model and 1 in config.scenarios:
        began = time.perf_counter()
        if train_reward_model(config, layout, events) and is_main():
            stages.record("train-s1-rm", {}, {"seconds": round(time.perf_counter() - began, 2), "steps": config.loop.max_steps})


def _fig4_dpo_loss(config: StudyConfig) -> str:
    return "dpo" if "dpo" in config.losses else config.losses[0]


def evaluate_all(config: StudyConfig, layout: Layout, stages: Stages, events: StudyEvents,
                 judge_factory: JudgeFactory, llm_client: Any | None) -> tuple[dict, dict]:
    """Stage 5: the start and every cell on the test prompts, and on the out-of-domain ones when given
    (each result cached in eval/, the out-of-domain ones in eval/ood/)."""
    test_prompts = load_study_prompts(config, "test")
    ood_prompts = load_study_prompts(config, "ood") if config.ood_test_prompts is not None else None
    ood_key = {"prompts": config.ood_test_prompts, "limit": config.ood_test_limit, "ids": [r["id"] for r in ood_prompts or []]}
    train_pairs = {s: rec.read_records(layout.pairs(s, "train")) for s in config.scenarios}
    judge_key = None if config.llm_judge is None else {"base_url": config.llm_judge.base_url, "model": config.llm_judge.model}
    pairs_key = {s: pairs_fingerprint(layout, s) for s in config.scenarios}

    def cached(name: str, label: str, model: str, score_sets: dict, settings: dict, ood: bool = False) -> dict:
        prompts, evals = (ood_prompts, layout.ood_evals) if ood else (test_prompts, layout.evals)
        name, settings = (f"eval-ood-{name.removeprefix('eval-')}", {**settings, "ood": ood_key}) if ood else (name, settings)
        result_path = evals / f"{label}.json"
        if stages.done(name, settings) and result_path.is_file():
            events.on_skip(name, "already evaluated")
            return _read_json(result_path)
        test_set = "out-of-domain test prompts" if ood else "test prompts"
        with stages.run(name, f"{label} answers {len(prompts)} {test_set}", settings) as made:
            result = evaluate_model(config, model, label, prompts, score_sets, evals / f"{slug(label)}.jsonl",
                                    events, judge_factory, llm_client)
            rec.write_json(result, result_path)
            made.update(result["cost"], accuracy=result["summary"].get("accuracy", result["summary"].get("metrics")))
        return result

    def evaluated(name: str, label: str, model: str, score_sets: dict, settings: dict) -> dict:
        result = cached(name, label, model, score_sets, settings)
        if ood_prompts is not None:  # the same model, the same judge, the other test set (no log-probs to score)
            result["ood"] = cached(name, label, model, {}, settings, ood=True)["summary"]
        return result

    candidates = {s: rec.read_records(layout.data / f"judged_{s}.jsonl") for s in sources_needed(config)}
    start = evaluated("eval-start", START, config.model, start_score_sets(config, train_pairs, candidates),
                      {"pairs": pairs_key, "judge": judge_key})
    start["source_accuracy"] = source_accuracy(candidates)
    cells = {}
    for loss in config.losses:
        for scenario in config.scenarios:
            label = cell_label(scenario, loss)
            folder = layout.cell(scenario, loss)
            # the run's summary names the training it evaluates: a cell trained again is evaluated again
            trained = hashlib.sha256((folder / "summary.json").read_bytes()).hexdigest()[:16]
            result = evaluated(f"eval-{label}", label, str(folder), {f"scenario{scenario}": train_pairs[scenario]},
                               {"pairs": pairs_key[scenario], "judge": judge_key, "trained": trained})
            summary = _read_json(folder / "summary.json")
            cells[label] = {**result, "scenario": scenario, "loss": loss, "folder": str(folder),
                            "events": summary.get("three_d_events", []), "final": summary.get("final", {}),
                            "training": cell_training(folder, len(train_pairs[scenario]))}
    return start, cells


def cell_training(folder: Path, pairs: int) -> dict:
    """What a cell's training was: its pairs, optimizer updates, global batch and passes over its pairs
    (from the run's run_config.json)."""
    run = _read_json(Path(folder) / "run_config.json")
    updates, batch = run.get("steps"), run.get("global_batch")
    passes = passes_over_pairs(updates, batch, pairs) if updates is not None and batch is not None else None
    return {"pairs": pairs, "updates": updates, "global_batch": batch, "passes": passes}


def _read_json(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_outputs(config: StudyConfig, layout: Layout, stages: Stages, start: dict, cells: dict) -> dict:
    """Stage 6: the tables (study.json, study.md) and the figures."""
    pairs_cost = stages.cost("pairs") or {}
    pair_rows = {str(s): pairs_cost.get("scenarios", {}).get(str(s), {}) for s in config.scenarios}
    data = {
        "train_prompts": len(rec.read_records(layout.data / "train_prompts.jsonl")),
        "test_prompts": start["summary"].get("problems"), "weak": config.weak_label,
        "ood_test_prompts": (start.get("ood") or {}).get("problems"),
        "shared_prompts": pairs_cost.get("prompts"), "heldout_prompts": pairs_cost.get("heldout_prompts"),
        "pairs": pair_rows,
    }
    plot_probes({(c["scenario"], c["loss"]): Path(c["folder"]) for c in cells.values()}, config.scenarios,
                config.losses, layout.root / "probes.png")
    fig4 = None
    if config.reward_model and 1 in config.scenarios:
        loss = _fig4_dpo_loss(config)
        fig4 = figure4(layout.rm, layout.cell(1, loss), layout.root / "fig4.png", "DPO" if loss == "dpo" else loss)
    study = {
        "config": config.to_json(),
        "data": data,
        "sources": sources(start, start.get("source_accuracy", {})),
        "table1": table1(config, start, cells),
        "table2": table2(config, start, cells),
        "table10": table10(config, start, cells),
        "events": detector_events(config, cells),
        "fig4": fig4,
        "cells": {label: {"folder": c["folder"], "final": c["final"], "eval": c["summary"], "ood_eval": c.get("ood"),
                          "training": c["training"]} for label, c in cells.items()},
        "start": {"eval": start["summary"], "ood_eval": start.get("ood"), "logprobs": start["logprobs"]},
        "costs": stages.all_costs(),
    }
    rec.write_json(rec.json_safe(study), layout.root / "study.json")
    (layout.root / "study.md").write_text(markdown(study) + "\n", encoding="utf-8")
    return study


def run_study(
    config: StudyConfig,
    events: StudyEvents | None = None,
    judge_factory: JudgeFactory | None = None,
    llm_client: Any | None = None,
) -> dict | None:
    """Run (or continue) the study in ``config.out``; the study's tables as a dict (None on the
    processes of an ``accelerate launch`` other than the first, which only train).

    ``judge_factory(config, size_hint)`` makes the judge of the candidates and of the test answers
    (default: math-verify, or the poem rules); ``llm_client`` is an OpenAI client for ``--judge llm``.
    """
    config.validate()
    # one study per folder: the first process holds its lock (each cell's run folder has its own)
    with run_lock.held(config.out, is_main()):
        return _run(config, events or StudyEvents(), judge_factory or default_judge, llm_client)


def _run(config: StudyConfig, events: StudyEvents, judge_factory: JudgeFactory, llm_client: Any | None) -> dict | None:
    if config.task == "poem":
        return run_poem_study(config, events, judge_factory)
    layout = Layout(Path(config.out))
    stages = Stages(layout.stages, events)
    if is_main():
        begin(config, layout)
        prepare_data(config, layout, stages, events, judge_factory)
        warn_uneven_passes(config, layout, events)  # before hours of training on an unfair comparison
    sync(config.loop.cpu)  # the other processes of an accelerate launch wait for the data
    train_all(config, layout, stages, events)
    if not is_main():
        return None
    start, cells = evaluate_all(config, layout, stages, events, judge_factory, llm_client)
    return write_outputs(config, layout, stages, start, cells)

