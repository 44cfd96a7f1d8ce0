"""Sampling on a tiny model: candidates, seeds, chunk reproducibility and resume."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest

from dpo3d.generation.sampler import HFSampler, SamplingConfig, check_backend, chunks, sample_all
from dpo3d.generation.sampling_run import (
    RunMismatch,
    content_id,
    plan_resume,
    prepare_prompts,
    sample_to_file,
    sample_to_stream,
    settings_path,
)

PROMPTS = [
    {"id": "a", "prompt": [{"role": "user", "content": "What is 2 + 3?"}], "answer": "5"},
    {"id": "b", "prompt": [{"role": "user", "content": "Name a prime number."}], "meta": {"level": 1}},
    {"id": "c", "prompt": "Plain text prompt:"},
    {"id": "d", "prompt": [{"role": "user", "content": "Count to three."}]},
    {"id": "e", "prompt": [{"role": "user", "content": "Say something short."}]},
]
# n=2, batch 4: chunks of 2 prompts -> chunks [a b] [c d] [e]
CONFIG = SamplingConfig(n=2, temperature=1.0, max_new_tokens=6, batch_size=4, seed=3)


class CountingSampler(HFSampler):
    """An HFSampler that records which chunks it sampled."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampled: list[int] = []

    def sample_chunk(self, chunk_index, prompts, source):
        self.sampled.append(chunk_index)
        return super().sample_chunk(chunk_index, prompts, source)


def sample(tiny_model, tokenizer, config=CONFIG, prompts=PROMPTS, skip=frozenset()):
    sampler = HFSampler(tiny_model, tokenizer, config)
    return [r for chunk in sample_all(sampler, prompts, "tiny", skip_chunks=set(skip)) for r in chunk.records]


def test_one_record_per_candidate_with_the_prompt_fields(tiny_model, tokenizer):
    records = sample(tiny_model, tokenizer)
    assert len(records) == len(PROMPTS) * CONFIG.n
    assert [(r["id"], r["sample_index"]) for r in records] == [(p["id"], k) for p in PROMPTS for k in range(2)]
    for record in records:
        prompt = next(p for p in PROMPTS if p["id"] == record["id"])
        assert {k: record[k] for k in prompt} == prompt  # prompt fields pass through
        assert record["source"] == "tiny"
        assert isinstance(record["completion"], str)
        assert 1 <= record["completion_tokens"] <= CONFIG.max_new_tokens
        assert record["finish_reason"] == ("length" if record["completion_tokens"] == CONFIG.max_new_tokens else "stop")
    # the candidates of one prompt are sampled, not copies
    assert records[0]["completion"] != records[1]["completion"]


def test_same_seed_same_candidates_other_seed_others(tiny_model, tokenizer):
    first = sample(tiny_model, tokenizer)
    assert sample(tiny_model, tokenizer) == first
    other = sample(tiny_model, tokenizer, SamplingConfig(**{**CONFIG.__dict__, "seed": 4}))
    assert [r["completion"] for r in other] != [r["completion"] for r in first]


def test_a_chunk_sampled_alone_equals_the_same_chunk_in_a_full_run(tiny_model, tokenizer):
    assert [len(c) for _, c in chunks(PROMPTS, CONFIG)] == [2, 2, 1]
    full = sample(tiny_model, tokenizer)
    alone = sample(tiny_model, tokenizer, skip={0, 2})
    assert alone == full[4:8]


def test_greedy_with_one_candidate_ignores_the_seed(tiny_model, tokenizer):
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=5, batch_size=4, seed=1)
    first = sample(tiny_model, tokenizer, greedy)
    assert len(first) == len(PROMPTS)
    assert sample(tiny_model, tokenizer, SamplingConfig(**{**greedy.__dict__, "seed": 2})) == first


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n": 0}, "-n must be at least 1"),
        ({"temperature": -1.0}, "--temperature"),
        ({"top_p": 0.0}, "--top-p"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"temperature": 0.0, "n": 2}, "use -n 1"),
    ],
)
def test_bad_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**{**CONFIG.__dict__, **change}).validate()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_is_a_clear_error():
    with pytest.raises(ValueError, match="needs vLLM installed"):
        check_backend("vllm")
    with pytest.raises(ValueError, match="--backend must be one of hf, vllm"):
        check_backend("tgi")
    check_backend("hf")


def test_prompts_get_stable_content_ids_and_duplicates_are_refused():
    prepared = prepare_prompts([{"prompt": "x"}, {"id": 7, "prompt": [{"role": "user", "content": "y"}]}])
    assert prepared[0]["id"] == content_id("x") == prepare_prompts([{"prompt": "x"}])[0]["id"]
    assert prepared[0]["id"] != content_id("x ")
    assert prepared[1]["id"] == "7"
    with pytest.raises(ValueError, match="record 3: duplicate id 'a' \\(first in record 1\\)"):
        prepare_prompts([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}])
    with pytest.raises(ValueError, match="duplicate id"):
        prepare_prompts([{"prompt": "same"}, {"prompt": "same"}])
    with pytest.raises(ValueError, match="record 1: 'prompt' should be"):
        prepare_prompts([{"id": "a", "prompt": 3}])


# --------------------------------------------------------------------------- files and resume


def lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def uninterrupted(tmp_path, tiny_model, tokenizer):
    path = tmp_path / "full.jsonl"
    sample_to_file(HFSampler(tiny_model, tokenizer, CONFIG), PROMPTS, "tiny", path, settings={"model": "tiny"})
    return path


def test_a_file_run_writes_what_a_stream_run_writes(tmp_path, uninterrupted, tiny_model, tokenizer):
    stream = (tmp_path / "stream.jsonl").open("w", encoding="utf-8")
    summary = sample_to_stream(HFSampler(tiny_model, tokenizer, CONFIG), PROMPTS, "tiny", stream)
    stream.close()
    assert (tmp_path / "stream.jsonl").read_text() == uninterrupted.read_text()
    assert summary.candidates == len(lines(uninterrupted)) == 10 and summary.new_tokens > 0
    saved = json.loads(settings_path(uninterrupted).read_text())
    assert saved["seed"] == 3 and saved["n"] == 2 and saved["model"] == "tiny" and saved["source"] == "tiny"


def test_resume_after_a_crash_gives_the_uninterrupted_file(tmp_path, uninterrupted, tiny_model, tokenizer):
    path = tmp_path / "run.jsonl"

    def crash_after_two(result, seen=[]):  # noqa: B006 - counts calls
        seen.append(result)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_to_file(HFSampler(tiny_model, tokenizer, CONFIG), PROMPTS, "tiny", path,
                       settings={"model": "tiny"}, on_chunk=crash_after_two)
    assert len(lines(path)) == 8  # two whole chunks on disk
    sampler = CountingSampler(tiny_model, tokenizer, CONFIG)
    started = []
    summary = sample_to_file(sampler, PROMPTS, "tiny", path, resume=True, settings={"model": "tiny"},
                             on_start=lambda total, skipped: started.append((total, skipped)))
    assert sampler.sampled == [2] and started == [(5, 4)] and summary.candidates == 2
    assert path.read_text() == uninterrupted.read_text()


@pytest.mark.parametrize("cut_lines, torn", [(5, True), (5, False), (4, True), (0, True), (1, False)])
def test_resume_after_a_torn_file_drops_the_half_chunk_and_duplicates_nothing(
    tmp_path, uninterrupted, tiny_model, tokenizer, cut_lines, torn
):
    full = uninterrupted.read_text()
    kept = "".join(line + "\n" for line in full.splitlines()[:cut_lines])
    path = tmp_path / "run.jsonl"
    # a crash mid-write leaves half a line with no newline after it
    path.write_text(kept + (full.splitlines()[cut_lines][:17] if torn else ""))
    assert plan_resume(path, PROMPTS, CONFIG, "tiny").done_chunks == set(range(cut_lines // 4))
    sampler = CountingSampler(tiny_model, tokenizer, CONFIG)
    sample_to_file(sampler, PROMPTS, "tiny", path, resume=True)
    assert sampler.sampled == list(range(cut_lines // 4, 3))
    assert path.read_text() == full
    keys = Counter((r["id"], r["sample_index"]) for r in map(json.loads, lines(path)))
    assert max(keys.values()) == 1


def test_resume_of_a_finished_file_samples_nothing(tmp_path, uninterrupted, tiny_model, tokenizer):
    before = uninterrupted.read_text()
    sampler = CountingSampler(tiny_model, tokenizer, CONFIG)
    summary = sample_to_file(sampler, PROMPTS, "tiny", uninterrupted, resume=True, settings={"model": "tiny"})
    assert sampler.sampled == [] and summary.skipped_prompts == 5 and uninterrupted.read_text() == before


def test_an_existing_output_needs_resume(uninterrupted, tiny_model, tokenizer):
    before = uninterrupted.read_text()
    with pytest.raises(ValueError, match="exists: pass --resume"):
        sample_to_file(HFSampler(tiny_model, tokenizer, CONFIG), PROMPTS, "tiny", uninterrupted)
    assert uninterrupted.read_text() == before


@pytest.mark.parametrize(
    "config, prompts, source, settings, message",
    [
        (SamplingConfig(**{**CONFIG.__dict__, "seed": 9}), PROMPTS, "tiny", {"model": "tiny"}, "seed 3 -> 9"),
        (SamplingConfig(**{**CONFIG.__dict__, "batch_size": 2}), PROMPTS, "tiny", {"model": "tiny"}, "batch_size 4 -> 2"),
        (CONFIG, PROMPTS, "tiny", {"model": "other"}, "model 'tiny' -> 'other'"),
        (CONFIG, PROMPTS[::-1], "tiny", {"model": "tiny"}, "candidate 1 is id 'a' sample 0, where this run has id 'e'"),
        (CONFIG, PROMPTS[:2], "tiny", {"model": "tiny"}, "holds 10 candidates, more than this run samples \\(4\\)"),
    ],
)
def test_resume_refuses_a_file_of_another_run(uninterrupted, tiny_model, tokenizer, config, prompts, source, settings, message):
    before = uninterrupted.read_text()
    with pytest.raises(RunMismatch, match=message):
        sample_to_file(HFSampler(tiny_model, tokenizer, config), prompts, source, uninterrupted, resume=True, settings=settings)
    assert uninterrupted.read_text() == before


def test_resume_without_settings_file_still_checks_the_records(uninterrupted, tiny_model, tokenizer):
    settings_path(uninterrupted).unlink()
    changed = [{**p, "prompt": "another template"} if p["id"] == "a" else p for p in PROMPTS]
    with pytest.raises(RunMismatch, match="candidate 1 \\(id 'a'\\) has another prompt text"):
        sample_to_file(HFSampler(tiny_model, tokenizer, CONFIG), changed, "tiny", uninterrupted, resume=True)
    with pytest.raises(RunMismatch, match="source 'tiny', this run 'policy'"):
        sample_to_file(HFSampler(tiny_model, tokenizer, CONFIG), PROMPTS, "policy", uninterrupted, resume=True)


def test_the_vllm_engine_gets_the_dtype_the_run_records(monkeypatch, tiny_model_dir):
    """vLLM picks a dtype of its own unless told: the engine must sample in the one the run resolved and records."""
    import importlib.machinery
    import sys
    import types

    import torch

    from dpo3d.generation import sampler as sampler_module
    from dpo3d.models.loading import LoadOptions

    engines: list[dict] = []
    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM = lambda **kwargs: engines.append(kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    config = sampler_module.SamplingConfig(n=1, max_new_tokens=2)
    sampler_module.load_sampler("vllm", str(tiny_model_dir), config, LoadOptions(dtype=torch.bfloat16), "cpu")
    sampler_module.load_sampler("vllm", str(tiny_model_dir), config, LoadOptions(dtype=torch.float32), "cpu")
    assert [engine["dtype"] for engine in engines] == ["bfloat16", "float32"]
