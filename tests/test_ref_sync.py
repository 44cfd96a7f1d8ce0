"""TR-DPO's reference dynamics in train-dpo (--ref-sync soft|hard, --ref-sync-alpha, --ref-sync-every), on
tiny models: what a sync makes of the reference's weights and cached log-probs, with and without LoRA, that
no sync changes nothing, that a resumed run ends like an uninterrupted one, the options and their errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dpo3d.data.run_log import read_log
from dpo3d.models.loading import load_causal_lm, load_tokenizer, save_pretrained
from dpo3d.models.lora import LoRAConfig
from dpo3d.models.tiny import tiny_causal_lm
from dpo3d.training import dpo as dpo_module
from dpo3d.training import reference as ref_cache
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.watch.probe_responses import ProbeResponseConfig

from .test_train_dpo import write_pairs


def config(tmp_path, model_dir, out, steps, lora_r=0, resume=False, **sync) -> DPORunConfig:
    loop = LoopConfig(out=tmp_path / out, lr=5e-3, batch_size=2, grad_accum=2, max_steps=steps, warmup_ratio=0.0,
                      schedule="constant", seed=0, save_every=2, resume=resume)
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    # eval at the first and last step; no squeezing probes (no generation): fast, and the reference is all that moves
    return DPORunConfig(model=str(model_dir), pairs=pairs, loop=loop, eval_pairs=pairs, eval_every=0, probe_size=4,
                        lora=LoRAConfig(r=lora_r), probe_responses=ProbeResponseConfig(greedy=False, samples=0), **sync)


def captured_task(monkeypatch) -> dict:
    """The DPOTask train_dpo hands to the shared loop (its reference log-probs and sync as the run ends)."""
    seen = {}
    real = dpo_module.train

    def spy(model, tokenizer, task, *args, **kwargs):
        seen["task"] = task
        return real(model, tokenizer, task, *args, **kwargs)

    monkeypatch.setattr(dpo_module, "train", spy)
    return seen


def scored(model, task) -> dict[str, torch.Tensor]:
    """``model``'s log-probs of every group the run caches, scored as the run scores its reference."""
    return ref_cache.compute(model, task.sync.groups, task.pad_id, task.settings.score_batch_size)


def assert_same_scores(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for name in found:
        assert torch.equal(found[name], expected[name]), name


def test_hard_sync_makes_the_reference_the_policy_of_that_step(tmp_path, tiny_model_dir, monkeypatch):
    policy_at_2 = train_dpo(config(tmp_path, tiny_model_dir, "fixed", steps=2)).out  # the policy after step 2
    seen = captured_task(monkeypatch)
    run = train_dpo(config(tmp_path, tiny_model_dir, "hard", steps=3, ref_sync="hard", ref_sync_every=2)).out
    task = seen["task"]
    # one sync, after step 2 (not after the last step, 3): the reference's weights and every cached log-prob
    # (train, unseen, eval groups) are those of the policy at step 2, scored the same way
    reference = load_causal_lm(str(policy_at_2))
    for name, weight in reference.state_dict().items():
        assert torch.equal(task.sync.model.state_dict()[name], weight), name
    assert_same_scores(task.reference, scored(reference, task))
    assert task.reference.keys() >= {"chosen", "rejected", "unseen", "eval_chosen", "eval_rejected"}
    records = read_log(run / "metrics.jsonl")
    assert [r.get("ref_synced", False) for r in records] == [False, False, True, False]
    assert [r["ref_syncs"] for r in records] == [0, 0, 1, 1]
    fixed = read_log(policy_at_2 / "metrics.jsonl")
    assert records[0]["eval_loss"] == fixed[0]["eval_loss"]
    for key in ("loss", "margin", "chosen_reward", "probe_chosen_logp"):  # steps 1-2 train alike
        assert [r[key] for r in records[1:3]] == [r[key] for r in fixed[1:3]], key
    # step 3 trains from the policy of step 2 against that same model: its implicit rewards start again at 0,
    # up to the scoring of a sequence in another batch (a pair's two sides together in training, a group's
    # sequences in the reference pass: other padding, other float32 rounding). Bound: a response of ≤ 16 tokens
    # whose summed log-prob is < 128 nats in size, each token rounded once (ulp(128) = 1.5e-5): ≤ 2.4e-4 per sum,
    # so a margin β·(Δ_chosen − Δ_rejected) ≤ 0.1·2·2.4e-4 ≈ 5e-5, and −log σ(m) moves from log 2 by ≤ |m|/2
    assert records[3]["margin"] == pytest.approx(0.0, abs=5e-5)
    assert records[3]["loss"] == pytest.approx(math.log(2), abs=2.5e-5)
    assert fixed[2]["margin"] > 0.01  # without the sync it had moved
    run_config = json.loads((run / "run_config.json").read_text())
    assert run_config["extra"]["ref_sync"] == {"mode": "hard", "alpha": 1.0, "every": 2}
    assert json.loads((run / "summary.json").read_text())["ref_synced_at"] == [2]


def test_soft_sync_mixes_the_weights(tmp_path, tiny_model_dir, monkeypatch):
    policy_at_2 = load_file(train_dpo(config(tmp_path, tiny_model_dir, "fixed", steps=2)).out / "model.safetensors")
    start = load_file(tiny_model_dir / "model.safetensors")
    seen = captured_task(monkeypatch)
    train_dpo(config(tmp_path, tiny_model_dir, "soft", steps=3, ref_sync="soft", ref_sync_alpha=0.25, ref_sync_every=2))
    task = seen["task"]
    weights = task.sync.model.state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    expected = 0.25 * policy_at_2[name] + 0.75 * start[name]  # θ_ref ← α·θ + (1−α)·θ_ref, once (after step 2)
    assert not torch.equal(policy_at_2[name], start[name])
    assert torch.equal(weights[name], expected)
    for key in start:  # every weight alike (the tied LM head is the embedding, saved once)
        assert torch.equal(weights[key], 0.25 * policy_at_2[key] + 0.75 * start[key]), key
    assert_same_scores(task.reference, scored(task.sync.model, task))


def test_lora_soft_sync_mixes_the_effective_weights(tmp_path, tiny_model_dir, monkeypatch):
    """The reference of a LoRA run syncs toward W0 + ΔW (ΔW = (α_lora/r)·B·A), not toward A and B mixed."""
    adapter = load_file(train_dpo(config(tmp_path, tiny_model_dir, "fixed", steps=2, lora_r=4)).out
                        / "adapter_model.safetensors")
    start = load_file(tiny_model_dir / "model.safetensors")
    seen = captured_task(monkeypatch)
    train_dpo(config(tmp_path, tiny_model_dir, "soft", steps=3, lora_r=4, ref_sync="soft", ref_sync_every=2))
    task = seen["task"]
    scaling = LoRAConfig().alpha / 4
    effective = dict(start)  # the policy after step 2 as one full model: W0 + ΔW on every adapted layer
    for key in adapter:
        if ".lora_A." in key:
            name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            effective[name] = start[name] + (adapter[key.replace("lora_A", "lora_B")] @ adapter[key]) * scaling
    assert len([key for key in adapter if ".lora_A." in key]) >= 14  # every linear layer of both blocks
    mixed = {name: 0.6 * effective[name] + (1 - 0.6) * start[name] for name in start}  # TRL's default α
    tokenizer = load_tokenizer(str(tiny_model_dir))
    reference = tiny_causal_lm(tokenizer, seed=1)  # other weights, all replaced by the mix
    reference.load_state_dict(mixed, strict=False)
    reference.tie_weights()
    assert_same_scores(task.reference, scored(reference, task))
    # mixing A and B apart gives another model (α·B1A1 + (1−α)·B2A2 is no B·A of mixed factors): here the
    # reference starts with no adapter (B = 0), and the mixed factors 0.6·B·0.6·A would scale ΔW by 0.36, not 0.6
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(task.sync.model.state_dict()[name], start[name] + 0.36 * (effective[name] - start[name]))


def _comparable(records):
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in records]


@pytest.mark.parametrize("lora_r", [0, 4])
def test_a_run_resumed_after_a_soft_sync_ends_like_an_uninterrupted_one(tmp_path, tiny_model_dir, lora_r):
    sync = {"ref_sync": "soft", "ref_sync_every": 2, "lora_r": lora_r}
    whole = train_dpo(config(tmp_path, tiny_model_dir, "whole", steps=6, **sync)).out

    class Stop(Exception):
        pass

    def crash(step):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):  # killed after the syncs of steps 2 and 4 and the checkpoint of step 4
        train_dpo(config(tmp_path, tiny_model_dir, "cut", steps=6, **sync), LoopCallbacks(on_step=crash))
    assert (tmp_path / "cut" / "checkpoint" / "reference" / "model.safetensors").is_file()
    cut = train_dpo(config(tmp_path, tiny_model_dir, "cut", steps=6, resume=True, **sync)).out
    records = read_log(cut / "metrics.jsonl")
    assert _comparable(records) == _comparable(read_log(whole / "metrics.jsonl"))
    assert [r["ref_syncs"] for r in records] == [0, 0, 1, 1, 2, 2, 2]


def test_a_sync_that_never_comes_changes_nothing(tmp_path, tiny_model_dir):
    """The moving reference's machinery (a copy of the model, checkpointed beside it) trains exactly like a
    fixed reference until a sync step."""
    fixed = read_log(train_dpo(config(tmp_path, tiny_model_dir, "fixed", steps=3)).out / "metrics.jsonl")
    late = read_log(train_dpo(config(tmp_path, tiny_model_dir, "late", steps=3, ref_sync="hard",
                                     ref_sync_every=3)).out / "metrics.jsonl")
    assert [r.pop("ref_syncs") for r in late] == [0, 0, 0, 0]
    assert _comparable(late) == _comparable(fixed)


@pytest.mark.parametrize(("sync", "message"), [
    ({"ref_sync": "sometimes"}, "--ref-sync must be soft or hard"),
    ({"ref_sync": "soft", "ref_sync_alpha": 0.0}, r"--ref-sync-alpha must lie in \(0, 1\]"),
    ({"ref_sync": "soft", "ref_sync_alpha": 1.5}, r"--ref-sync-alpha must lie in \(0, 1\]"),
    ({"ref_sync": "hard", "ref_sync_every": 0}, "--ref-sync-every must be a positive"),
])
def test_bad_settings_fail_in_one_line(tmp_path, tiny_model_dir, sync, message):
    with pytest.raises(ValueError, match=message):
        train_dpo(config(tmp_path, tiny_model_dir, "run", steps=1, **sync))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_reference_of_another_shape_cannot_sync(tmp_path, tiny_model_dir, tokenizer):
    other = tmp_path / "wider"
    save_pretrained(tiny_causal_lm(tokenizer, hidden_size=64), tokenizer, other)
    with pytest.raises(ValueError, match="--ref-sync: --ref .* do not share their weights' names and shapes"):
        train_dpo(config(tmp_path, tiny_model_dir, "run", steps=1, ref=str(other), ref_sync="hard"))


def test_another_reference_of_the_same_shape_starts_the_moving_reference(tmp_path, tiny_model_dir, tokenizer,
                                                                          monkeypatch):
    other = tmp_path / "other"
    save_pretrained(tiny_causal_lm(tokenizer, seed=3), tokenizer, other)
    seen = captured_task(monkeypatch)
    train_dpo(config(tmp_path, tiny_model_dir, "run", steps=1, ref=str(other), ref_sync="soft"))
    task = seen["task"]  # no sync in one step: the reference is --ref, as loaded
    assert_same_scores(task.reference, scored(load_causal_lm(str(other)), task))


def test_train_dpo_offers_the_sync_options_with_their_help():
    import typer

    from dpo3d.training import ref_sync
    from dpo3d_cli.app import app

    command = typer.main.get_command(app).commands["train-dpo"]
    found = {param.opts[0]: param for param in command.params}
    for flag, default, shown in (("--ref-sync", None, ref_sync.SYNC_HELP), ("--ref-sync-alpha", 0.6, ref_sync.ALPHA_HELP),
                                 ("--ref-sync-every", 32, ref_sync.EVERY_HELP)):
        assert (found[flag].default, found[flag].help) == (default, shown), flag
    assert "TR-DPO" in ref_sync.SYNC_HELP and "TRL's default 512" in ref_sync.EVERY_HELP
    assert "--ref-sync-every" in CliRunner().invoke(app, ["train-dpo", "--help"]).output


def test_resuming_with_a_sync_the_run_started_without_is_refused(tmp_path, tiny_model_dir):
    class Stop(Exception):
        pass

    def crash(step):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train_dpo(config(tmp_path, tiny_model_dir, "cut", steps=4), LoopCallbacks(on_step=crash))
    with pytest.raises(ValueError, match="started with a fixed reference; this resume asks for --ref-sync hard"):
        train_dpo(config(tmp_path, tiny_model_dir, "cut", steps=4, resume=True, ref_sync="hard", ref_sync_every=2))


@pytest.mark.parametrize("resumed", [{}, {"ref_sync": "soft", "ref_sync_alpha": 0.5, "ref_sync_every": 2},
                                     {"ref_sync": "hard", "ref_sync_every": 1}])
def test_resuming_a_synced_run_with_other_sync_settings_is_refused(tmp_path, tiny_model_dir, resumed):
    # without the check, a resume without --ref-sync went on against the reference as last synced, silently
    class Stop(Exception):
        pass

    def crash(step):
        if step == 3:
            raise Stop

    started = {"ref_sync": "soft", "ref_sync_alpha": 0.6, "ref_sync_every": 2}
    with pytest.raises(Stop):
        train_dpo(config(tmp_path, tiny_model_dir, "cut", steps=4, **started), LoopCallbacks(on_step=crash))
    with pytest.raises(ValueError, match="started with --ref-sync soft .α 0.6, every 2 steps.; this resume asks for"):
        train_dpo(config(tmp_path, tiny_model_dir, "cut", steps=4, resume=True, **resumed))
    # the same settings resume
    assert train_dpo(config(tmp_path, tiny_model_dir, "cut", steps=4, resume=True, **started)).steps == 4


def test_sharded_training_refuses_a_sync():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from dpo3d.training import sharding

    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP)
    with pytest.raises(ValueError, match="--ref-sync reads the policy's whole weights"):
        sharding.check_supported(fsdp, 0, False, whole_weights=True)
    sharding.check_supported(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU), 0, False, whole_weights=True)
