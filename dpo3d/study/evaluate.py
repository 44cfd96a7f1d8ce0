"""Evaluating the start and every cell: test accuracy (Table 2) and per-token log-probs (Table 1).

One model is loaded at a time. It answers the held-out test prompts (greedy, one answer
each: :func:`dpo3d.judges.evaluation.generate`), the answers are judged (math-verify, with the
LLM judge's 1-5 score when asked; or the poem rules) and summarised by
:func:`dpo3d.judges.evaluation.math_summary` / :func:`~dpo3d.judges.evaluation.poem_summary`. The same
loaded model scores the log-probs the tables need with :func:`dpo3d.scoring.logprobs.score_records`:
the start scores every scenario's training pairs (Table 1, "before") and each source's
candidates (why the off-policy stand-in is off-policy); a cell scores its own scenario's
pairs ("after").
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dpo3d.data import records as rec
from dpo3d.judges import evaluation as ev
from dpo3d.scoring.logprobs import score_records

from .config import LLMJudgeSettings, StudyConfig
from .data import JudgeFactory, judge_records, sampler_for
from .progress import StudyEvents, Tally


def llm_scored(records: list[dict], settings: LLMJudgeSettings, client: Any | None = None) -> list[dict]:
    """The records with the LLM judge's 1-5 ``llm_score`` (None where it gave none), its reply and any error."""
    from ..judges.llm_judge import LLMJudge, LLMJudgeConfig
    from ..judges.rubric import DEFAULT_RUBRIC

    config = LLMJudgeConfig(base_url=settings.base_url, model=settings.model, api_key_env=settings.api_key_env,
                            rubric=settings.rubric or DEFAULT_RUBRIC, cache_path=settings.cache_path)
    with LLMJudge(config, client=client) as judge:
        judged = list(judge.judge(records))
    out = ev.with_llm_scores(records, judged)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def logprob_means(scores: Sequence[Mapping]) -> dict:
    """Mean over records of each side's per-token log-prob (and of the summed one)."""
    out: dict = {"count": len(scores)}
    for side in ("chosen", "rejected", "completion"):
        if scores and f"{side}_logp_mean" in scores[0]:
            out[f"{side}_per_token"] = _mean([s[f"{side}_logp_mean"] for s in scores])
            out[f"{side}_sum"] = _mean([s[f"{side}_logp"] for s in scores])
    return out


def evaluate_model(
    config: StudyConfig,
    model: str,
    label: str,
    test_prompts: list[dict],
    score_sets: Mapping[str, list[dict]],
    answers_path: Path,
    events: StudyEvents,
    judge_factory: JudgeFactory,
    llm_client: Any | None = None,
) -> dict:
    """``{"summary": test-set summary of this model, "logprobs": {set name: means}, "cost": ...}``;
    every judged answer goes to ``answers_path``."""
    sampling = ev.eval_config(n=1, max_new_tokens=config.eval_max_new_tokens, batch_size=config.eval_batch_size,
                              seed=config.loop.seed)
    sampler = sampler_for(model, config, sampling)
    tally = Tally()

    def chunk_done(result) -> None:
        tally.add(result)
        events.on_generate(f"answer {label}", tally.prompts, len(test_prompts))

    answers = ev.generate(sampler, test_prompts, label, on_chunk=chunk_done)
    logprobs = {}
    for name, records in score_sets.items():
        if records:
            scored = score_records(sampler.model, sampler.tokenizer, records, batch_size=config.eval_batch_size,
                                   max_length=config.max_length)
            logprobs[name] = logprob_means(scored)
    del sampler
    gc.collect()
    if config.task == "poem":
        judged = ev.score_poem_records(answers, "<answers>")
        summary = ev.poem_summary(judged)["models"][label]
    else:
        judged = judge_records(judge_factory(config, len(answers)), answers)
        if config.llm_judge is not None:
            judged = llm_scored(judged, config.llm_judge, llm_client)
        summary = ev.math_summary(judged)["models"][label]
    rec.write_records(judged, answers_path)
    return {"summary": summary, "logprobs": logprobs, "cost": tally.as_cost()}


def start_score_sets(config: StudyConfig, pairs: Mapping[int, list[dict]], candidates: Mapping[str, list[dict]]) -> dict:
    """What the start model scores: each scenario's training pairs, each source's candidates (as
    prompt/completion), and the dataset's solutions."""
    sets: dict[str, list[dict]] = {f"scenario{s}": list(p) for s, p in pairs.items()}
    for source, records in candidates.items():
        sets[f"source:{source}"] = [{"prompt": r["prompt"], "completion": r["completion"]} for r in records
                                   if isinstance(r.get("completion"), str) and r["completion"].strip()]
    solutions = {}
    for records in candidates.values():
        for r in records:
            if isinstance(r.get("reference"), str) and r["reference"].strip():
                solutions.setdefault(r["id"], {"prompt": r["prompt"], "completion": r["reference"]})
    if solutions:
        sets["source:reference"] = list(solutions.values())
    return sets


def source_accuracy(candidates: Mapping[str, list[dict]]) -> dict[str, float]:
    """The share of each source's candidates its judge scored right (score 1)."""
    return {source: _mean([1.0 if r.get("score") == 1 else 0.0 for r in records]) for source, records in candidates.items()
            if records}
