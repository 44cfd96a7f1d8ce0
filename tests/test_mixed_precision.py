"""Mixed precision done right: bf16 autocast over float32 master weights trains at the paper's learning rate;
pure bf16 weights (the old `--dtype bfloat16` advice) do not, and say so. Gradient checkpointing changes memory,
not results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo3d.data.run_log import read_log
from dpo3d.models.loading import LoadOptions
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.reference import CACHE_FILE
from dpo3d.watch.probe_responses import ProbeResponseConfig

from .commands import dpo3d

ROOT = Path(__file__).resolve().parents[1]
PAPER_LR = 5e-7  # the paper's DPO learning rate (App. D.1)
# bf16 autocast vs float32, per logged step of a tiny model's DPO loss (~0.69): measured differences are
# ~2e-4 at lr 5e-7 and ~1e-4 at lr 1e-3, so 5e-3 leaves 25x headroom while catching a run that drifts
LOSS_TOLERANCE = 5e-3


def write_pairs(path: Path, n: int = 8) -> Path:
    rows = [{"id": f"p{i}", "prompt": f"Question {i}: pick a colour.", "chosen": f"Blue, number {i}.",
             "rejected": f"I refuse to answer question {i} at all."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dpo_run(tmp_path, model_dir, name, lr=PAPER_LR, max_steps=4, mixed_precision=None, dtype=torch.float32, **loop):
    settings = {"lr": lr, "batch_size": 2, "grad_accum": 1, "max_steps": max_steps, "warmup_ratio": 0.0,
                "schedule": "constant", "mixed_precision": mixed_precision, **loop}
    config = DPORunConfig(model=str(model_dir), pairs=write_pairs(tmp_path / "pairs.jsonl"),
                          loop=LoopConfig(out=tmp_path / name, **settings), probe_size=2, unseen_limit=0,
                          load=LoadOptions(dtype=dtype), probe_responses=ProbeResponseConfig(max_new_tokens=8))
    return train_dpo(config).out


def changed_share(start: Path, out: Path) -> float:
    """Share of parameters whose stored value differs from the start (compared in the trained dtype)."""
    before, after = load_file(str(start / "model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = sum(int((after[k] != before[k].to(after[k].dtype)).sum()) for k in after)
    return changed / sum(t.numel() for t in after.values())


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_log(out / "metrics.jsonl") if "loss" in r]


def test_bf16_mixed_precision_trains_every_weight_at_the_papers_lr(tmp_path, tiny_model_dir):
    fp32 = dpo_run(tmp_path, tiny_model_dir, "fp32")
    bf16 = dpo_run(tmp_path, tiny_model_dir, "bf16", mixed_precision="bf16")
    assert changed_share(tiny_model_dir, fp32) >= 0.95  # the control: float32 moves (nearly) every weight
    assert changed_share(tiny_model_dir, bf16) >= 0.95  # pure bf16 weights: ~1%
    assert all(t.dtype == torch.float32 for t in load_file(str(bf16 / "model.safetensors")).values())  # master weights
    a, b = losses(fp32), losses(bf16)
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= LOSS_TOLERANCE
    assert json.loads((bf16 / "run_config.json").read_text())["mixed_precision"] == "bf16"
    # the reference pass ran under the same autocast: its log-probs carry bf16's rounding, close to float32's
    ref32, ref16 = load_file(str(fp32 / CACHE_FILE))["chosen"], load_file(str(bf16 / CACHE_FILE))["chosen"]
    assert not torch.equal(ref32, ref16)
    assert torch.allclose(ref32, ref16, atol=0.5)


def test_bf16_loss_curve_follows_float32_while_the_loss_falls(tmp_path, tiny_model_dir):
    a = losses(dpo_run(tmp_path, tiny_model_dir, "fp32", lr=1e-3))
    b = losses(dpo_run(tmp_path, tiny_model_dir, "bf16", lr=1e-3, mixed_precision="bf16"))
    assert a[0] - a[-1] > 0.05  # the curve moves, so following it means something
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= LOSS_TOLERANCE


def test_pure_bf16_weights_warn_and_barely_train(tmp_path, tiny_model_dir):
    """The old GPU advice (`--dtype bfloat16`): allowed when asked for, with a warning naming the effect."""
    with pytest.warns(UserWarning, match="round away"):
        out = dpo_run(tmp_path, tiny_model_dir, "pure", dtype=torch.bfloat16)
    assert changed_share(tiny_model_dir, out) < 0.10


def test_gradient_checkpointing_gives_the_same_run(tmp_path, tiny_model_dir, tokenizer):
    from dpo3d.models.tiny import tiny_causal_lm
    from dpo3d.training.precision import enable_gradient_checkpointing

    model = tiny_causal_lm(tokenizer)
    enable_gradient_checkpointing(model)
    name = "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else "is_gradient_checkpointing"
    assert getattr(model, name) is True
    plain = read_log(dpo_run(tmp_path, tiny_model_dir, "plain", lr=1e-3, max_steps=2) / "metrics.jsonl")
    checkpointed = read_log(dpo_run(tmp_path, tiny_model_dir, "ckpt", lr=1e-3, max_steps=2, gradient_checkpointing=True)
                            / "metrics.jsonl")
    for a, b in zip(plain[1:], checkpointed[1:], strict=True):
        for key in ("loss", "grad_norm", "chosen_logp", "probe_chosen_logp"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


def test_sft_rm_and_ppo_train_under_bf16_with_checkpointing(tmp_path, tiny_model_dir):
    from dpo3d.training.ppo import PPOConfig, train_ppo
    from dpo3d.training.rm import RMRunConfig, train_rm
    from dpo3d.training.sft import SFTRunConfig, train_sft

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    numerics = {"mixed_precision": "bf16", "gradient_checkpointing": True}

    def loop(name):
        return LoopConfig(out=tmp_path / name, lr=1e-3, batch_size=2, grad_accum=1, max_steps=2, **numerics)

    sft = train_sft(SFTRunConfig(model=str(tiny_model_dir), data=str(pairs), loop=loop("sft")))
    rm = train_rm(RMRunConfig(model=str(tiny_model_dir), pairs=pairs, loop=loop("rm")))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(4)))
    ppo = train_ppo(PPOConfig(model=str(tiny_model_dir), prompts=str(prompts), reward="contains:yes",
                              loop=LoopConfig(out=tmp_path / "ppo", max_steps=2, **numerics), rollout_batch=4,
                              minibatch=2, ppo_epochs=1, max_new_tokens=4))
    for result, key in ((sft, "loss"), (rm, "loss"), (ppo, "value_loss")):
        record = read_log(result.out / "metrics.jsonl")[-1]
        assert record["step"] == 2 and torch.isfinite(torch.tensor(record[key])), result.out
        assert json.loads((result.out / "run_config.json").read_text())["mixed_precision"] == "bf16"


def test_cli_warns_on_pure_bf16_and_refuses_fp16_on_cpu_and_unknown_precisions(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    common = ["train-dpo", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--max-steps", "1", "--device", "cpu",
              "--probe-new-tokens", "8"]
    fp16 = dpo3d(*common, "--out", str(tmp_path / "a"), "--mixed-precision", "fp16")
    assert fp16.returncode == 2 and "--mixed-precision fp16 needs a GPU" in fp16.stderr and "Traceback" not in fp16.stderr
    odd = dpo3d(*common, "--out", str(tmp_path / "b"), "--mixed-precision", "fp8")
    assert odd.returncode == 2 and "--mixed-precision must be one of no, bf16, fp16" in odd.stderr
    pure = dpo3d(*common, "--out", str(tmp_path / "c"), "--dtype", "bfloat16", "--batch-size", "2", "--probe-size", "2")
    assert pure.returncode == 0, pure.stderr[-2000:]
    assert "warning training with pure bfloat16 weights" in " ".join(pure.stderr.split())


@pytest.mark.parametrize("mixed_precision", [None, "bf16"])
def test_step_0_changes_sit_inside_the_measured_noise_floor(tmp_path, tiny_model_dir, mixed_precision):
    """Before any update the policy is the reference: every change it shows is rounding. The step-0 record
    states that rounding (probe_noise_nats: how far a probe's score moves with its batch, at least the compute
    precision's roundoff on the score), the step-1 record's pre-update changes sit inside it (the reference was
    scored in another pass, other batches), and the detector raises nothing from it."""
    # lr 1e-12: Adam moves each weight by ~1e-12, far below a float32 ulp of the tiny model's weights (~1e-9)
    out = dpo_run(tmp_path, tiny_model_dir, f"noise-{mixed_precision}", lr=1e-12, max_steps=2,
                  mixed_precision=mixed_precision, log_every=1)
    first, second, *_ = read_log(out / "metrics.jsonl")
    noise, noise_per_token = first["probe_noise_nats"], first["probe_noise_nats_per_token"]
    # what batching moves stays within a few units of the compute precision on the largest probe score (~-76
    # nats here): float32 ~5e-6 nats, bf16 autocast ~0.3
    eps = {None: torch.finfo(torch.float32).eps, "bf16": torch.finfo(torch.bfloat16).eps}[mixed_precision]
    scale = max(abs(first["probe_chosen_logp"]), abs(first["probe_rejected_logp"]))
    assert noise <= 16 * eps * scale and noise_per_token <= noise
    assert first["probe_chosen_logp_delta"] == 0.0 and first["probe_rejected_logp_delta"] == 0.0
    # the policy does not move, so each later change is rounding, within 2x the noise (two scores)
    for key in ("chosen_logp_change", "rejected_logp_change"):
        assert abs(second[key]) <= 2 * noise + 1e-6, (key, second[key], noise)
    assert json.loads((out / "summary.json").read_text())["three_d_events"] == []
