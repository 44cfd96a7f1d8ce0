"""The study's data: candidates from the policy and from an off-policy model, judged, paired.

Every step is a library stage used as it is: :func:`dpo3d.generation.sampling_run.sample_to_file`
(chunked, seeded, resumable), a :class:`~dpo3d.judges.base.Judge` (math-verify, or the
poem rules), :func:`dpo3d.pairs.building.build_pairs` with the ``--chosen-from/--rejected-from``
sources of each scenario. Held-out pairs are taken by prompt, the same prompts for
every scenario, so the reward model and DPO of Fig. 4 are scored on the same pairs.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from dpo3d.data import datasets as ds
from dpo3d.data import inputs
from dpo3d.data import records as rec
from dpo3d.generation.sampler import HFSampler, SamplingConfig
from dpo3d.generation.sampling_run import prepare_prompts, sample_to_file
from dpo3d.judges.evaluation import as_chat, resolve_poem_data
from dpo3d.models.loading import LoadOptions, load_model_and_tokenizer, pick_device
from dpo3d.pairs.building import PairConfig, build_pairs, read_candidates

from ..judges.base import Judge
from .config import POLICY, SCENARIOS, WEAK, Layout, StudyConfig
from .progress import StudyEvents, Tally

JudgeFactory = Callable[[StudyConfig, int], Judge]


def load_study_prompts(config: StudyConfig, which: str) -> list[dict]:
    """The training (``which`` = train), the test (test) or the out-of-domain test prompts (ood); poem
    prompts as chat messages, as eval-poem gives them.

    Test prompts that are also training prompts (the same id: one dataset for both) are left out
    before the set's limit is counted, so no model is tested on a problem it was trained on.
    """
    train = which == "train"
    source, limit = {"train": (config.train_prompts, config.train_limit), "test": (config.test_prompts, config.test_limit),
                     "ood": (config.ood_test_prompts, config.ood_test_limit)}[which]
    if source is None:
        raise ValueError(f"no {which} prompts given")
    training_ids = set() if train else {r["id"] for r in load_study_prompts(config, "train")}
    if config.task == "poem":
        source = resolve_poem_data(source)
    spec = source if str(source) in ds.BUILTINS else inputs.DataSpec.of(source, config.subset, config.columns)
    records = ds.load_prompts(spec, limit=limit if train else None)
    if config.task == "poem":
        records = [as_chat(r) for r in records]
    records = [r for r in prepare_prompts(records) if r["id"] not in training_ids]
    if not train and limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"{source}: no {which} prompts" + ("" if train else " left after leaving out the training ones"))
    if config.task == "math":
        for number, record in enumerate(records, start=1):
            if record.get("answer") is None:
                raise rec.RecordError(str(source), number, "a math study needs each prompt's gold 'answer'")
    return records


def default_judge(config: StudyConfig, size_hint: int) -> Judge:
    """math-verify on the final answer (math), or the paper's poem rules (poem)."""
    if config.task == "poem":
        from ..judges.rules import poem_judge

        return poem_judge()
    from ..judges.math_judge import MathJudge, MathJudgeConfig

    return MathJudge(MathJudgeConfig(workers=config.math_workers), size_hint=size_hint)


def judge_records(judge: Judge, records: Sequence[dict]) -> list[dict]:
    records = [judge.check(record, "<candidates>", number) or record for number, record in enumerate(records, start=1)]
    judge.open(len(records))
    try:
        return list(judge.judge(records))
    finally:
        judge.close()


def sampler_for(model: str, config: StudyConfig, sampling: SamplingConfig) -> HFSampler:
    load = LoadOptions(dtype=config.load.dtype, trust_remote_code=config.load.trust_remote_code, padding_side="left")
    lm, tokenizer = load_model_and_tokenizer(model, load)
    lm.to(pick_device(config.device))
    return HFSampler(lm, tokenizer, sampling)


def sample_candidates(
    config: StudyConfig, prompts: list[dict], which: str, path: Path, events: StudyEvents
) -> dict:
    """The policy's (``which`` = policy) or the off-policy model's (weak) candidates into ``path``,
    resumable chunk by chunk. Returns what it cost."""
    if which == POLICY:
        model, temperature = config.model, config.temperature
    else:  # the off-policy model, or the stand-in: the policy itself, sampled hot
        model, temperature = config.weak_model or config.model, config.off_policy_temperature
    sampling = SamplingConfig(n=config.n, temperature=temperature, top_p=1.0, max_new_tokens=config.max_new_tokens,
                              batch_size=config.sample_batch_size, seed=config.loop.seed + (0 if which == POLICY else 1))
    sampler = sampler_for(model, config, sampling)
    tally = Tally()

    def chunk_done(result) -> None:
        tally.add(result)
        events.on_generate(f"sample {which}", tally.prompts, len(prompts))

    settings = {"model": model, "dtype": str(config.load.dtype)}
    summary = sample_to_file(sampler, prompts, which, path, resume=True, settings=settings,
                             on_start=lambda total, skipped: setattr(tally, "prompts", skipped), on_chunk=chunk_done)
    del sampler
    gc.collect()
    return {"model": model, "temperature": temperature, "candidates": summary.candidates,
            "resumed_prompts": summary.skipped_prompts, **tally.as_cost()}


# --------------------------------------------------------------------------- pairs


def _heldout_ids(ids: Sequence[str], share: float, seed: int) -> set[str]:
    """A seeded share of the prompt ids (at least one, never all), chosen by hash: the same ids
    whichever scenario they come from."""
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    count = min(len(ranked) - 1, max(1, round(share * len(ranked))))
    return set(ranked[:count])


def _policy_unseen(pair: dict) -> dict:
    # dispersion is about mass moving to the policy's own other answers: keep those as `unseen`
    return {**pair, "unseen": [u for u in pair.get("unseen", []) if u.get("source") == POLICY]}


def scenario_pairs(config: StudyConfig, judged_paths: Sequence[Path]) -> tuple[dict[int, list[dict]], dict]:
    """Each scenario's pairs (build-pairs with its sources), the tallies of what was dropped and why."""
    candidates = read_candidates([str(p) for p in judged_paths])
    pairs: dict[int, list[dict]] = {}
    stats: dict = {}
    for scenario in config.scenarios:
        chosen_from, rejected_from = SCENARIOS[scenario]
        built, tally = build_pairs(candidates, PairConfig(chosen_from=chosen_from, rejected_from=rejected_from))
        pairs[scenario] = [{**_policy_unseen(p), "scenario": scenario} for p in built]
        stats[scenario] = {"prompts": tally.groups, "pairs": tally.kept, "dropped": dict(tally.dropped)}
    return pairs, stats


def split_pairs(config: StudyConfig, pairs: dict[int, list[dict]]) -> tuple[dict[int, dict[str, list[dict]]], dict]:
    """Train and held-out pairs per scenario. With ``same_prompts`` every scenario keeps only the
    prompts all of them have a pair for, so they differ only in where the responses came from."""
    ids = {s: [p["id"] for p in ps] for s, ps in pairs.items()}
    for scenario, found in ids.items():
        if len(found) < 2:
            raise ValueError(
                f"scenario {scenario} ({'/'.join(SCENARIOS[scenario])}) has {len(found)} pair(s), fewer than 2 "
                "(one to train, one held out): sample more prompts (--train-limit) or more candidates (-n)"
                + (", or pass --all-prompts" if config.same_prompts else "")
            )
    if config.same_prompts:
        shared = set.intersection(*(set(v) for v in ids.values()))
        if len(shared) < 2:
            counts = ", ".join(f"scenario {s}: {len(v)}" for s, v in ids.items())
            raise ValueError(f"only {len(shared)} prompt(s) have a pair in every scenario ({counts}): "
                             "sample more prompts or candidates, or pass --all-prompts")
        universe = sorted(shared)
    else:
        universe = sorted(set().union(*(set(v) for v in ids.values())))
    heldout = _heldout_ids(universe, config.heldout_share, config.loop.seed)
    keep = set(universe)
    out: dict[int, dict[str, list[dict]]] = {}
    for scenario, found in pairs.items():
        kept = [p for p in found if p["id"] in keep]
        out[scenario] = {"train": [p for p in kept if p["id"] not in heldout], "heldout": [p for p in kept if p["id"] in heldout]}
        if not out[scenario]["train"] or not out[scenario]["heldout"]:
            raise ValueError(f"scenario {scenario}: no {'training' if not out[scenario]['train'] else 'held-out'} "
                             "pairs after the split: sample more prompts, or change --heldout-share")
    return out, {"prompts": len(universe), "heldout_prompts": len(heldout)}


def write_pairs(layout: Layout, split: dict[int, dict[str, list[dict]]]) -> None:
    for scenario, parts in split.items():
        for name, records in parts.items():
            rec.write_records(records, layout.pairs(scenario, name))


def sources_needed(config: StudyConfig) -> tuple[str, ...]:
    """Which samplers the scenarios need (no off-policy model for scenarios 1 and 2 alone)."""
    return (POLICY,) + ((WEAK,) if any(WEAK in SCENARIOS[s] for s in config.scenarios) else ())
