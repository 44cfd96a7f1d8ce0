"""LoRA (dpo3d.models.lora, peft) on tiny models: it trains, its folder loads everywhere --model goes,
resume and 2 processes are exact, the reward head trains, PPO's reference is the base."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo3d.data.records import read_records
from dpo3d.data.run_log import read_log
from dpo3d.data.schema import PAIRS_OR_COMPLETIONS
from dpo3d.models import lora
from dpo3d.models.loading import LoadOptions, full_model_folder, load_causal_lm, load_tokenizer
from dpo3d.models.lora import LoRAConfig
from dpo3d.scoring.logprobs import score_records
from dpo3d.training import dpo as dpo_module
from dpo3d.training import rm as rm_module
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.rm import RMRunConfig, train_rm
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.watch.probe_responses import ProbeResponseConfig

from .launching import port_args
from .test_cli_train import comparable, dpo3d, train_args
from .test_train_dpo import write_pairs

ROOT = Path(__file__).resolve().parents[1]
# summed log-probs of ~10-token responses, float32: the adapter path (W·x + s·B·A·x) against
# the merged weights ((W + s·B·A)·x) that a loaded folder uses differ by rounding alone
LOGP_TOLERANCE = 1e-4


def dpo_config(tmp_path, model_dir, out="run", max_steps=4, lora_config=LoRAConfig(r=4), **loop) -> DPORunConfig:
    settings = {"lr": 5e-3, "batch_size": 2, "grad_accum": 1, "max_steps": max_steps, "warmup_ratio": 0.0,
                "schedule": "constant", "seed": 0, **loop}
    return DPORunConfig(model=str(model_dir), pairs=write_pairs(tmp_path / "pairs.jsonl"),
                        loop=LoopConfig(out=tmp_path / out, **settings), probe_size=4, lora=lora_config,
                        probe_responses=ProbeResponseConfig(max_new_tokens=8))  # squeezing probes of 8 tokens: test_probe_responses covers them


def capture_trained(monkeypatch, module) -> dict:
    """Keep the model a trainer hands to the shared loop: the in-memory model after training."""
    seen = {}
    real = module.train

    def spy(model, *args, **kwargs):
        seen["model"] = model
        return real(model, *args, **kwargs)

    monkeypatch.setattr(module, "train", spy)
    return seen


def logps(model, tokenizer, pairs: Path) -> torch.Tensor:
    scores = score_records(model, tokenizer, read_records(pairs, PAIRS_OR_COMPLETIONS))
    return torch.tensor([[s["chosen_logp"], s["rejected_logp"]] for s in scores])


def cli_logps(pairs: Path, model: Path) -> torch.Tensor:
    scored = dpo3d("logprobs", str(pairs), "--model", str(model))
    assert scored.returncode == 0, scored.stderr
    rows = [json.loads(line) for line in scored.stdout.splitlines()]
    return torch.tensor([[r["chosen_logp"], r["rejected_logp"]] for r in rows])


def test_lora_dpo_moves_chosen_up_and_rejected_down(tmp_path, tiny_model_dir):
    result = train_dpo(dpo_config(tmp_path, tiny_model_dir, max_steps=6))
    records = read_log(result.out / "metrics.jsonl")
    assert records[-1]["probe_chosen_logp_delta"] > 0.1
    assert records[-1]["probe_rejected_logp_delta"] < -0.1
    assert records[-1]["margin"] > records[1]["margin"]
    # the run folder is an adapter folder: no full model in it
    assert (result.out / "adapter_config.json").is_file() and (result.out / "adapter_model.safetensors").is_file()
    assert not (result.out / "model.safetensors").exists() and (result.out / "tokenizer.json").is_file()
    config = json.loads((result.out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert json.loads((result.out / "run_config.json").read_text())["extra"]["lora"]["r"] == 4


def test_adapter_folder_loads_in_logprobs_like_the_in_memory_model(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    seen = capture_trained(monkeypatch, dpo_module)
    statuses: list[str] = []
    config = dpo_config(tmp_path, tiny_model_dir, max_steps=4, lora_config=LoRAConfig(r=4, merge=True))
    result = train_dpo(config, on_status=statuses.append)
    assert any(s.startswith("trainable parameters: 4,352 of ") for s in statuses), statuses
    pairs = config.pairs
    trained = seen["model"]
    assert lora.is_adapted(trained)
    in_memory = logps(trained, tokenizer, pairs)
    base = logps(load_causal_lm(str(tiny_model_dir)), tokenizer, pairs)
    assert (in_memory - base).abs().max() > 100 * LOGP_TOLERANCE  # the adapter learned something to reproduce
    loaded = cli_logps(pairs, result.out)
    assert torch.allclose(loaded, in_memory, atol=LOGP_TOLERANCE, rtol=0)
    # --merge: OUT/merged is a plain Hugging Face model folder with the same function
    merged = result.out / lora.MERGED_FOLDER
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert torch.allclose(cli_logps(pairs, merged), in_memory, atol=LOGP_TOLERANCE, rtol=0)
    # engines that read a folder themselves (vLLM) get the adapter merged once into the cache
    monkeypatch.setenv("DPO3D_CACHE", str(tmp_path / "cache"))
    folder = Path(full_model_folder(str(result.out)))
    assert folder.parent == tmp_path / "cache" / "merged" and (folder / "config.json").is_file()
    assert full_model_folder(str(result.out)) == str(folder)  # the second call reuses it
    assert torch.allclose(logps(load_causal_lm(str(folder)), tokenizer, pairs), in_memory, atol=LOGP_TOLERANCE, rtol=0)
    assert full_model_folder(str(tiny_model_dir)) == str(tiny_model_dir)


class Interrupt(Exception):
    pass


def test_resume_with_an_adapter_equals_an_uninterrupted_run(tmp_path, tiny_model_dir):
    whole = train_dpo(dpo_config(tmp_path, tiny_model_dir, out="whole", max_steps=6, save_every=2, grad_accum=2))

    def stop_at_3(step: int) -> None:
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_dpo(dpo_config(tmp_path, tiny_model_dir, out="cut", max_steps=6, save_every=2, grad_accum=2),
                  LoopCallbacks(on_step=stop_at_3))
    cut = tmp_path / "cut"
    assert (cut / "checkpoint" / "adapter_model.safetensors").is_file()
    assert not (cut / "checkpoint" / "model.safetensors").exists()  # the checkpoint holds the adapter alone
    with pytest.raises(ValueError, match="holds a LoRA adapter"):
        train_dpo(dpo_config(tmp_path, tiny_model_dir, out="cut", max_steps=6, save_every=2, grad_accum=2,
                             resume=True, lora_config=LoRAConfig()))
    with pytest.raises(ValueError, match="does not fit"):
        train_dpo(dpo_config(tmp_path, tiny_model_dir, out="cut", max_steps=6, save_every=2, grad_accum=2,
                             resume=True, lora_config=LoRAConfig(r=8)))
    train_dpo(dpo_config(tmp_path, tiny_model_dir, out="cut", max_steps=6, save_every=2, grad_accum=2, resume=True))
    assert comparable(cut / "metrics.jsonl") == comparable(whole.out / "metrics.jsonl")
    resumed, uninterrupted = load_file(cut / "adapter_model.safetensors"), load_file(whole.out / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="accelerate CLI")
def test_two_process_lora_dpo_equals_one_process(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    adapter = ("--lora-r", "4", "--max-steps", "3", "--device", "cpu")
    single = dpo3d(*train_args(pairs, tiny_model_dir, tmp_path / "one", *adapter, "--batch-size", "4"))
    assert single.returncode == 0, single.stderr
    launcher = str(Path(sys.executable).parent / "accelerate")
    double = subprocess.run(
        [launcher, "launch", *port_args(), "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "dpo3d",
         *train_args(pairs, tiny_model_dir, tmp_path / "two", *adapter, "--batch-size", "2")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = read_log(tmp_path / "one" / "metrics.jsonl"), read_log(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [0, 1, 2, 3]
    assert one[-1]["probe_chosen_logp_delta"] != 0  # the adapter trained
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "margin", "chosen_logp", "rejected_logp", "grad_norm", "probe_chosen_logp", "probe_rejected_logp"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    first, second = load_file(tmp_path / "one" / "adapter_model.safetensors"), load_file(tmp_path / "two" / "adapter_model.safetensors")
    for key in first:
        assert torch.allclose(first[key], second[key], atol=1e-6), key


def test_trainable_summary_is_the_adapter_and_its_real_adamw_state(tokenizer):
    from dpo3d.models.tiny import tiny_causal_lm

    base = tiny_causal_lm(tokenizer, seed=0)
    total = sum(p.numel() for p in base.parameters())
    linear = [m for name, m in base.named_modules() if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")]
    model = lora.add_adapter(base, LoRAConfig(r=4), "tiny", seed=0)
    summary = lora.trainable_summary(model)
    assert summary.trainable == sum(4 * (m.in_features + m.out_features) for m in linear)
    assert summary.total == total + summary.trainable
    assert summary.share == pytest.approx(summary.trainable / summary.total)
    # the same adapter from the same seed; computes the base exactly until it trains (B = 0)
    again = lora.add_adapter(tiny_causal_lm(tokenizer, seed=0), LoRAConfig(r=4), "tiny", seed=0)
    for (name, a), b in zip(model.named_parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.tensor([[1, 2, 3, 4]])
    with lora.adapter_disabled(model):
        off = model(input_ids=ids).logits
    assert torch.equal(model(input_ids=ids).logits, off)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    assert state == summary.optimizer_state_bytes
    with lora.adapter_disabled(model):
        assert torch.equal(model(input_ids=ids).logits, off)  # the base did not move
    assert not torch.equal(model(input_ids=ids).logits, off)


def test_lora_reward_model_trains_its_head_and_loads_as_a_reward_model(tmp_path, tiny_model_dir, monkeypatch):
    from dpo3d.judges.reward_model import is_reward_model, load_reward_model, score_sequences

    seen = capture_trained(monkeypatch, rm_module)
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    loop = LoopConfig(out=tmp_path / "rm", lr=1e-2, batch_size=4, grad_accum=1, max_steps=6, warmup_ratio=0.0,
                      schedule="constant")
    result = train_rm(RMRunConfig(model=str(tiny_model_dir), pairs=pairs, loop=loop, lora=LoRAConfig(r=4, merge=True)))
    trained = seen["model"]  # merged by --merge at the end: the same function, no adapter left
    weights = load_file(result.out / "adapter_model.safetensors")
    heads = [key for key in weights if "score" in key]
    assert heads == ["base_model.model.score.weight"]  # the head is saved in full, not adapted
    torch.manual_seed(0)  # the run's seed: the head it started from
    start, _ = load_reward_model(str(tiny_model_dir))
    assert (weights[heads[0]] - start.score.weight).abs().max() > 1e-3  # and it trained
    records = read_log(result.out / "metrics.jsonl")
    assert records[-1]["accuracy"] == 1.0 and records[-1]["margin"] > records[0].get("margin", records[1]["margin"])

    assert is_reward_model(str(result.out)) and is_reward_model(str(result.out / lora.MERGED_FOLDER))
    model, tokenizer = load_reward_model(str(result.out))
    from dpo3d.pairs.pair_set import load_pairs

    encoded = load_pairs(pairs, tokenizer, 1024, 0)
    expected = score_sequences(trained, encoded.chosen, tokenizer.pad_token_id)
    assert torch.allclose(score_sequences(model, encoded.chosen, tokenizer.pad_token_id), expected, atol=1e-4)
    merged, _ = load_reward_model(str(result.out / lora.MERGED_FOLDER))
    assert torch.allclose(score_sequences(merged, encoded.chosen, tokenizer.pad_token_id), expected, atol=1e-4)


def test_dpo_on_an_sft_adapter_merges_it_first(tmp_path, tiny_model_dir, tokenizer):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    sft = dpo3d("sft", "--data", str(pairs), "--model", str(tiny_model_dir), "--out", str(tmp_path / "sft"),
                "--max-steps", "3", "--batch-size", "4", "--grad-accum", "1", "--lr", "1e-2", "--lora-r", "4")
    assert sft.returncode == 0, sft.stderr
    assert "trainable parameters: 4,352 of" in sft.stderr
    dpo = dpo3d(*train_args(pairs, tmp_path / "sft", tmp_path / "dpo", "--max-steps", "2", "--lora-r", "4"))
    assert dpo.returncode == 0, dpo.stderr
    base = json.loads((tmp_path / "dpo" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str((tmp_path / "sft").resolve())
    # the reference (the starting policy) is the SFT adapter merged into its base, not the bare base
    reference = load_file(tmp_path / "dpo" / "reference_logps.safetensors")
    sft_logps, base_logps = cli_logps(pairs, tmp_path / "sft"), logps(load_causal_lm(str(tiny_model_dir)), tokenizer, pairs)
    assert torch.allclose(reference["chosen"], sft_logps[:, 0], atol=LOGP_TOLERANCE)
    assert (sft_logps - base_logps).abs().max() > 100 * LOGP_TOLERANCE
    stacked = cli_logps(pairs, tmp_path / "dpo")  # base -> SFT adapter -> DPO adapter
    assert (stacked - sft_logps).abs().max() > 100 * LOGP_TOLERANCE
    assert load_tokenizer(str(tmp_path / "dpo")).pad_token_id is not None


def test_an_sft_adapter_starts_reward_and_value_models(tmp_path, tiny_model_dir):
    from dpo3d.judges.reward_model import is_reward_model, load_reward_model
    from dpo3d.training.ppo_tokens import load_value_model
    from dpo3d.training.sft import SFTRunConfig, train_sft

    loop = LoopConfig(out=tmp_path / "sft", lr=1e-2, batch_size=4, grad_accum=1, max_steps=2, warmup_ratio=0.0)
    train_sft(SFTRunConfig(model=str(tiny_model_dir), data=str(write_pairs(tmp_path / "pairs.jsonl")), loop=loop,
                           lora=LoRAConfig(r=4)))
    sft = str(tmp_path / "sft")
    assert not is_reward_model(sft)

    def q_proj(model) -> torch.Tensor:
        return model.model.layers[0].self_attn.q_proj.weight

    policy, base = load_causal_lm(sft), load_causal_lm(str(tiny_model_dir))
    assert (q_proj(policy) - q_proj(base)).abs().max() > 1e-4  # the adapter is in
    for model in (load_reward_model(sft)[0], load_value_model(sft, LoadOptions())):
        assert not lora.is_adapted(model) and torch.equal(q_proj(model), q_proj(policy))


def test_merge_without_lora_is_one_line_exit_2(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    result = dpo3d(*train_args(pairs, tiny_model_dir, tmp_path / "run", "--max-steps", "1", "--merge"))
    assert result.returncode == 2 and "--merge goes with --lora-r" in result.stderr and "Traceback" not in result.stderr
    result = dpo3d(*train_args(pairs, tiny_model_dir, tmp_path / "run", "--max-steps", "1", "--lora-r", "4",
                               "--lora-targets", "no_such_proj"))
    assert result.returncode == 2 and "no_such_proj" in result.stderr and "Traceback" not in result.stderr


def test_ppo_lora_reference_is_the_base_with_the_adapter_off(tmp_path, tiny_model_dir, tokenizer):
    from dpo3d.training.ppo import PPOConfig, PPOTrainer

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": [{"role": "user", "content": f"Q {i}?"}]}) + "\n"
                               for i in range(8)))
    config = PPOConfig(model=str(tiny_model_dir), prompts=str(prompts), reward="contains:a",
                       loop=LoopConfig(out=tmp_path / "ppo", max_steps=3, lr=1e-2), rollout_batch=4, minibatch=4,
                       ppo_epochs=2, max_new_tokens=4, temperature=1.0, lora=LoRAConfig(r=4))
    statuses: list[str] = []
    trainer = PPOTrainer(config, on_status=statuses.append)
    assert trainer.ref is None  # no second copy of the weights
    assert any("(policy and value model)" in s for s in statuses)
    trainer.train()
    records = read_log(tmp_path / "ppo" / "metrics.jsonl")
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first rollout: policy = base
    assert records[-1]["kl"] != pytest.approx(0.0, abs=1e-6)
    ids = torch.tensor([tokenizer.encode("Q 1? yes")])
    fresh = load_causal_lm(str(tiny_model_dir))
    with lora.adapter_disabled(trainer.policy) as reference:
        assert torch.allclose(reference(input_ids=ids).logits, fresh(input_ids=ids).logits, atol=1e-6)
    assert not torch.allclose(trainer.policy(input_ids=ids).logits, fresh(input_ids=ids).logits, atol=1e-4)
    assert (tmp_path / "ppo" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "ppo" / "value" / "adapter_config.json").read_text())["task_type"] == "TOKEN_CLS"
    from dpo3d.training.ppo_tokens import load_value_model

    value = load_value_model(str(tmp_path / "ppo" / "value"), LoadOptions())  # the value adapter loads merged
    with lora.adapter_disabled(trainer.value):
        assert not torch.allclose(value(input_ids=ids).logits, trainer.value(input_ids=ids).logits, atol=1e-4)
    assert torch.allclose(value(input_ids=ids).logits, trainer.value(input_ids=ids).logits, atol=1e-4)

    # resume: a run cut at step 2's checkpoint ends like the uninterrupted one (policy and value adapters)
    def crash(step: int) -> None:
        if step == 3:
            raise Interrupt

    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        PPOTrainer(replace(config, loop=replace(config.loop, out=cut, save_every=2)), LoopCallbacks(on_step=crash)).train()
    assert (cut / "checkpoint" / "value" / "adapter_model.safetensors").is_file()
    PPOTrainer(replace(config, loop=replace(config.loop, out=cut, save_every=2, resume=True))).train()
    strip = lambda path: [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(path)]  # noqa: E731
    assert strip(cut / "metrics.jsonl") == strip(tmp_path / "ppo" / "metrics.jsonl")


@pytest.mark.slow
def test_smollm2_rank_8_trains_under_2_percent():
    """The README's figures: SmolLM2-135M with --lora-r 8 on every linear layer."""
    from dpo3d.models.loading import BUNDLED

    full = lora.trainable_summary(load_causal_lm(BUNDLED))
    adapted = lora.trainable_summary(lora.add_adapter(load_causal_lm(BUNDLED), LoRAConfig(r=8), BUNDLED))
    # 30 layers x r x (in + out) of q, k, v, o (576 -> 576, 192, 192, 576) and gate, up, down (576 <-> 1536)
    assert adapted.trainable == 30 * 8 * (2 * 1152 + 2 * 768 + 3 * 2112) == 2_442_240
    assert adapted.total == full.total + adapted.trainable == 136_957_248
    assert adapted.optimizer_state_bytes == 2 * 4 * 2_442_240 + 4 * 30 * 7 * 2 == 19_539_600
    assert full.optimizer_state_bytes == 1_076_121_152  # 55x the adapter's


def test_a_bare_peft_adapter_folder_loads_and_a_broken_one_is_named(tmp_path, tiny_model_dir, tokenizer):
    """An adapter written by peft itself (no tokenizer beside it, as other tools save them)."""
    from dpo3d.models.loading import ModelNotFound

    model = lora.add_adapter(load_causal_lm(str(tiny_model_dir)), LoRAConfig(r=2, targets="q_proj,v_proj"), str(tiny_model_dir))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "bare")
    assert not (tmp_path / "bare" / "tokenizer_config.json").exists()
    loaded = load_causal_lm(str(tmp_path / "bare"))
    assert load_tokenizer(str(tmp_path / "bare")).vocab_size == tokenizer.vocab_size
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
    config = json.loads((tmp_path / "bare" / "adapter_config.json").read_text())
    (tmp_path / "bare" / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(ModelNotFound, match="gone: no such model folder"):
        load_causal_lm(str(tmp_path / "bare"))
