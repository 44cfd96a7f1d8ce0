"""`study --task poem`: the paper's Table 3, DPO against RLHF-PPO on the poem rules, from one start.

DPO: ``n`` candidates per training prompt from the policy, scored by the poem rules
(:func:`dpo3d.judges.rules.poem_judge`), best against worst (build-pairs' defaults),
then ``train_dpo``. PPO: ``train_ppo`` with ``--reward poem`` on the same prompts, for
as many steps as it takes to generate the same number of samples
(``ceil(prompts × n / rollout batch)``). Both, and the start, write one poem per test
prompt, scored by the same rules (:func:`dpo3d.judges.evaluation.poem_summary`), reported as
Table 3: Row Number, Words per Row, Rhythm, Tone Pattern, Title.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from dpo3d.data import records as rec

from ..poetry import POEM_METRICS
from ..training.ppo import PPOConfig, train_ppo
from .cells import loop_config, pairs_fingerprint, plan, train_cell
from .config import START, Layout, StudyConfig
from .data import JudgeFactory, load_study_prompts
from .evaluate import evaluate_model
from .prepare import begin, prepare_data
from .progress import Stages, StudyEvents, is_main, sync

#: the poem task trains one scenario: the policy's best poem against its worst
SCENARIO = 1
PPO_LABEL, DPO_LABEL = "RLHF-PPO", "DPO"


def ppo_steps(config: StudyConfig, prompts: int) -> int:
    """PPO steps that generate as many samples as DPO's data took: prompts × n rollouts."""
    return max(1, math.ceil(prompts * config.n / config.ppo_rollout_batch))


def train_ppo_run(config: StudyConfig, layout: Layout, steps: int, events: StudyEvents) -> bool:
    folder = layout.root / "cells" / "poem-ppo"
    prompts_path = layout.data / "train_prompts.jsonl"
    decided = plan(folder, "ppo", "train-ppo", events, config.loop.cpu)
    if decided is None:
        return False
    loop = replace(loop_config(config, folder, decided == "resume", config.ppo_lr), max_steps=steps)
    run = PPOConfig(
        model=config.model, prompts=str(prompts_path), reward="poem", loop=loop,
        rollout_batch=config.ppo_rollout_batch, minibatch=min(config.ppo_minibatch, config.ppo_rollout_batch),
        ppo_epochs=config.ppo_epochs, kl_coef=config.ppo_kl_coef,
        temperature=config.temperature, max_new_tokens=config.max_new_tokens, load=config.load, lora=config.lora,
    )
    train_ppo(run, events.training("ppo"), lambda message: events.on_status(f"ppo: {message}"))
    return True


def table3(results: dict[str, dict]) -> list[dict]:
    """A row per model (Base, RLHF-PPO, DPO): each rule metric's mean and the mean score."""
    return [{"model": label, "poems": r["summary"]["count"],
             **{m: r["summary"]["metrics"].get(m) for m in POEM_METRICS}, "score": r["summary"]["metrics"]["score"]}
            for label, r in results.items()]


def markdown(study: dict) -> str:
    header = ["model", "poems", "Row Number", "Words per Row", "Rhythm", "Tone Pattern", "Title", "score"]
    lines = [f"# dpo3d study (poem): {study['config']['model']}", "",
             f"DPO on {study['pairs']['train']} rule-scored pairs (best vs worst of {study['config']['n']} samples "
             f"for {study['prompts']} prompts) against RLHF-PPO with --reward poem for {study['ppo_steps']} steps of "
             f"{study['config']['ppo_rollout_batch']} rollouts: {study['samples']['dpo']} and "
             f"{study['samples']['ppo']} generated samples.", "",
             "## Table 3: poem rule metrics (means in [0, 1])", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in study["table3"]:
        cells = [row["model"], str(row["poems"])] + ["—" if row[m] is None else f"{row[m]:.3f}"
                                                      for m in (*POEM_METRICS, "score")]
        lines.append("| " + " | ".join(cells) + " |")
    events = "; ".join(f"{e['property']} at step {e['step']}" for e in study["dpo_events"]) or "none"
    lines += ["", f"3D detector events of the DPO run: {events}.", ""]
    return "\n".join(lines)


def run_poem_study(config: StudyConfig, events: StudyEvents, judge_factory: JudgeFactory) -> dict | None:
    layout = Layout(Path(config.out))
    stages = Stages(layout.stages, events)
    config.scenarios, loss = (SCENARIO,), config.losses[0]
    if is_main():
        begin(config, layout)
        prepare_data(config, layout, stages, events, judge_factory)
    sync(config.loop.cpu)
    prompts = len(rec.read_records(layout.data / "train_prompts.jsonl"))
    steps = ppo_steps(config, prompts)
    began = time.perf_counter()
    if train_cell(config, layout, SCENARIO, loss, events) and is_main():
        stages.record("train-dpo", {}, {"seconds": round(time.perf_counter() - began, 2), "steps": config.loop.max_steps})
    began = time.perf_counter()
    if train_ppo_run(config, layout, steps, events) and is_main():
        stages.record("train-ppo", {}, {"seconds": round(time.perf_counter() - began, 2), "steps": steps})
    if not is_main():
        return None
    test_prompts = load_study_prompts(config, "test")
    models = {"Base": config.model, PPO_LABEL: str(layout.root / "cells" / "poem-ppo"),
              DPO_LABEL: str(layout.cell(SCENARIO, loss))}
    results = {}
    for label, model in models.items():
        path = layout.evals / f"{label}.json"
        summary = Path(model) / "summary.json"  # which training it evaluates (none for the start)
        trained = hashlib.sha256(summary.read_bytes()).hexdigest()[:16] if summary.is_file() else None
        settings = {"pairs": pairs_fingerprint(layout, SCENARIO), "trained": trained}
        if stages.done(f"eval-{label}", settings) and path.is_file():
            events.on_skip(f"eval-{label}", "already evaluated")
            results[label] = json.loads(path.read_text(encoding="utf-8"))
            continue
        with stages.run(f"eval-{label}", f"{label} writes {len(test_prompts)} poems", settings) as made:
            results[label] = evaluate_model(config, model, label, test_prompts, {}, layout.eval_file(label), events,
                                            judge_factory)
            rec.write_json(results[label], path)
            made.update(results[label]["cost"], score=results[label]["summary"]["metrics"]["score"])
    pairs = (stages.cost("pairs") or {}).get("scenarios", {}).get(str(SCENARIO), {})
    dpo_summary = json.loads((layout.cell(SCENARIO, loss) / "summary.json").read_text(encoding="utf-8"))
    study = {
        "config": config.to_json(), "task": "poem", "prompts": prompts, "pairs": pairs, "ppo_steps": steps,
        "samples": {"dpo": prompts * config.n, "ppo": steps * config.ppo_rollout_batch},
        "table3": table3(results), "by_form": {label: r["summary"]["by_form"] for label, r in results.items()},
        "dpo_events": dpo_summary.get("three_d_events", []), "costs": stages.all_costs(), "start_label": START,
    }
    rec.write_json(rec.json_safe(study), layout.root / "study.json")
    (layout.root / "study.md").write_text(markdown(study) + "\n", encoding="utf-8")
    return study

