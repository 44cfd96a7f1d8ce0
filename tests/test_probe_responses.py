"""The squeezing probes: the starting policy's greedy response and samples, tracked through training."""

from __future__ import annotations

import json

import pytest
import torch

from dpo3d.data.run_log import read_log
from dpo3d.data.sequences import EncodedPair
from dpo3d.generation.sampler import SamplingConfig, generate_ids
from dpo3d.models.loading import load_causal_lm, load_tokenizer
from dpo3d.scoring.logprobs import score_sequences
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.watch import probe_responses
from dpo3d.watch.probe_responses import FILE, ProbeResponseConfig

from .test_train_dpo import write_pairs

SQUEEZE = ProbeResponseConfig(greedy=True, samples=2, temperature=1.0, max_new_tokens=10)


def config_for(tmp_path, model_dir, out="run", steps=3, **loop):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    settings = {"lr": 5e-3, "batch_size": 2, "grad_accum": 1, "max_steps": steps, "warmup_ratio": 0.0,
                "schedule": "constant", "seed": 0, "log_every": 1, **loop}
    return DPORunConfig(model=str(model_dir), pairs=pairs, loop=LoopConfig(out=tmp_path / out, **settings),
                        probe_size=3, probe_responses=SQUEEZE)


def test_greedy_and_sampled_probes_are_the_start_policy_own_and_tracked(tmp_path, tiny_model_dir):
    result = train_dpo(config_for(tmp_path, tiny_model_dir))
    stored = json.loads((result.out / FILE).read_text())
    greedy = [EncodedPair(p, r) for p, r in stored["responses"]["greedy"]]
    samples = [EncodedPair(p, r) for p, r in stored["responses"]["samples"]]
    assert len(greedy) == 3 and len(samples) == 6  # 3 probe prompts (distinct here), 2 samples each
    # the greedy response is what the starting model decodes greedily from that prompt
    model, tokenizer = load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    decoded = generate_ids(model, tokenizer, [greedy[0].prompt_ids], SamplingConfig(n=1, temperature=0.0, max_new_tokens=10))
    assert greedy[0].response_ids == decoded[0][0]
    records = read_log(result.out / "metrics.jsonl")
    first, last = records[0], records[-1]
    # step 0 measures the starting policy's own log-probs of them, and changes from there
    start = score_sequences(model, greedy, tokenizer.pad_token_id)
    assert abs(first["probe_greedy_logp"] - float(start.sum.mean())) < 1e-4
    assert first["probe_greedy_logp_delta"] == 0.0 and first["probe_samples_logp_delta"] == 0.0
    assert abs(last["probe_greedy_logp_delta"] - (last["probe_greedy_logp"] - first["probe_greedy_logp"])) < 1e-9
    assert last["probe_greedy_logp_delta"] != 0.0
    # greedy is, per token, at least as likely under the start as its own samples at temperature 1
    assert first["probe_greedy_logp_per_token"] > first["probe_samples_logp_per_token"]
    # the policy's per-token entropy along its own responses, worked from the full logits by hand
    for name, seqs in (("greedy", greedy), ("samples", samples)):
        assert first[f"probe_{name}_entropy"] == pytest.approx(by_hand_entropy(model, seqs), abs=1e-4)
    assert last["probe_greedy_entropy"] != first["probe_greedy_entropy"]
    assert "probe_chosen_entropy" not in first  # only the policy's own responses carry it


def by_hand_entropy(model, seqs) -> float:
    """Mean over sequences of the mean over response positions of -sum_v p log p, one sequence at a time."""
    per_sequence = []
    with torch.no_grad():
        for seq in seqs:
            ids = torch.tensor([seq.prompt_ids + seq.response_ids])
            logits = model(input_ids=ids).logits[0, len(seq.prompt_ids) - 1 : -1].double()
            log_p = torch.log_softmax(logits, -1)
            per_sequence.append(float(-(log_p.exp() * log_p).sum(-1).mean()))
    return sum(per_sequence) / len(per_sequence)


class Stop(Exception):
    pass


def test_resume_reuses_the_stored_responses(tmp_path, tiny_model_dir, monkeypatch):
    whole = train_dpo(config_for(tmp_path, tiny_model_dir, out="whole", steps=4))

    def crash(step):
        if step == 3:
            raise Stop

    config = config_for(tmp_path, tiny_model_dir, out="parts", steps=4, save_every=2)
    with pytest.raises(Stop):
        train_dpo(config, LoopCallbacks(on_step=crash))
    saved = (config.loop.out / FILE).read_text()
    def regenerate(*args, **kwargs):
        raise AssertionError("a resumed run must read its probe responses back, not generate them again")

    monkeypatch.setattr(probe_responses, "generate", regenerate)
    resumed = train_dpo(config_for(tmp_path, tiny_model_dir, out="parts", steps=4, save_every=2, resume=True))
    assert (resumed.out / FILE).read_text() == saved
    assert read_log(resumed.out / "metrics.jsonl")[-1]["probe_samples_logp"] == pytest.approx(
        read_log(whole.out / "metrics.jsonl")[-1]["probe_samples_logp"], abs=1e-6)


def test_no_probe_responses_when_switched_off(tmp_path, tiny_model_dir):
    config = config_for(tmp_path, tiny_model_dir, steps=1)
    config.probe_responses = ProbeResponseConfig(greedy=False, samples=0)
    result = train_dpo(config)
    assert not (result.out / FILE).exists()
    assert "probe_greedy_logp" not in read_log(result.out / "metrics.jsonl")[0]
