"""train-dpo on tiny models: every loss runs, the 3D trends show, resume and NaN handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dpo3d.data.run_log import read_log
from dpo3d.losses import LOSSES, LossOutput, bind_loss, register
from dpo3d.losses.registry import LOSSES as REGISTRY
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.run_folder import LoopCallbacks, NonFiniteLoss
from dpo3d.watch.probe_responses import ProbeResponseConfig

PROMPT = [{"role": "user", "content": "Pick a colour."}]


def write_pairs(path: Path, n: int = 8) -> Path:
    rows = [
        {
            "id": f"p{i}",
            "prompt": [{"role": "user", "content": f"Question {i}: pick a colour."}],
            "chosen": f"Blue, number {i}.",
            "rejected": f"I refuse to answer question {i} at all.",
            "unseen": [f"Green {i}.", {"completion": f"Red is fine for {i}."}],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(tmp_path, model_dir, loss="dpo", steps=4, out_name="run", callbacks=None, **loop):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    settings = {"lr": 5e-3, "batch_size": 2, "grad_accum": 2, "max_steps": steps, "warmup_ratio": 0.0,
                "schedule": "constant", "seed": 0, **loop}
    config = DPORunConfig(
        model=str(model_dir), pairs=pairs, loop=LoopConfig(out=tmp_path / out_name, **settings), loss=bind_loss(loss),
        eval_pairs=pairs, eval_every=2, grad_split_every=2, probe_size=4,
        probe_responses=ProbeResponseConfig(max_new_tokens=12),
    )
    return train_dpo(config, callbacks)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_runs_a_step(tmp_path, tiny_model_dir, loss):
    result = run(tmp_path, tiny_model_dir, loss=loss, steps=1, grad_accum=1)
    record = read_log(result.out / "metrics.jsonl")[-1]
    assert record["step"] == 1
    assert record["loss"] is not None and torch.isfinite(torch.tensor(record["loss"]))


def test_metrics_hold_every_diagnostic(tmp_path, tiny_model_dir):
    result = run(tmp_path, tiny_model_dir, steps=4)
    records = read_log(result.out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    last = records[-1]
    for key in (
        "loss", "chosen_logp", "rejected_logp", "chosen_logp_per_token", "rejected_logp_per_token",
        "chosen_logp_change", "rejected_logp_change", "chosen_reward", "rejected_reward", "margin", "accuracy",
        "log_grad_chosen", "log_grad_rejected", "probe_chosen_logp", "probe_rejected_logp", "probe_unseen_logp",
        "probe_chosen_logp_delta", "probe_rejected_logp_delta", "probe_unseen_logp_delta",
        "probe_unseen_logp_per_token", "grad_norm_chosen_side", "grad_norm_rejected_side",
        "eval_loss", "eval_accuracy", "eval_margin", "grad_norm", "lr",
    ):
        assert key in last, key
    assert records[0]["probe_chosen_logp_delta"] == 0.0
    # token-level dispersion at every logged step (the values are checked by hand in test_divergence.py), and
    # the training moves it: the chosen's token gains at the first differing position
    for record in records:
        assert record["probe_divergence_pairs"] >= 1
        assert all(0 < record[f"probe_divergence_{k}_p"] < 1 for k in ("chosen", "rejected"))
    assert records[-1]["probe_divergence_chosen_p"] != records[0]["probe_divergence_chosen_p"]
    # DPO in log space: both sides get the same |∂L/∂logp|; in probability space the ratio is x1/x2
    assert last["logp_grad_chosen"] == pytest.approx(-last["logp_grad_rejected"], rel=1e-5)
    assert (result.out / "model.safetensors").is_file() and (result.out / "reference_logps.safetensors").is_file()
    assert not (result.out / "checkpoint").exists()
    run_config = json.loads((result.out / "run_config.json").read_text())
    assert run_config["extra"]["loss"] == "dpo" and run_config["global_batch"] == 4


def test_dpo_shows_the_drastic_drop_the_toy_predicts(tmp_path, tiny_model_dir):
    """Rejected log-prob falls by more than the chosen one rises; the rejected gradient in x grows."""
    result = run(tmp_path, tiny_model_dir, steps=12, lr=1e-2)
    records = read_log(result.out / "metrics.jsonl")
    last = records[-1]
    fell, rose = -last["probe_rejected_logp_delta"], last["probe_chosen_logp_delta"]
    assert fell > 0 and fell > rose
    ratio = [r["log_grad_rejected"] - r["log_grad_chosen"] for r in records if r.get("log_grad_chosen") is not None]
    assert ratio[-1] > ratio[0]


class Stop(Exception):
    pass


def _comparable(records):
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in records]


def test_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    whole = run(tmp_path, tiny_model_dir, steps=6, out_name="whole", save_every=2)

    def crash(step):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path, tiny_model_dir, steps=6, out_name="broken", save_every=2, callbacks=LoopCallbacks(on_step=crash))
    assert (tmp_path / "broken" / "checkpoint").is_dir()
    resumed = run(tmp_path, tiny_model_dir, steps=6, out_name="broken", save_every=2, resume=True)
    assert _comparable(read_log(resumed.out / "metrics.jsonl")) == _comparable(read_log(whole.out / "metrics.jsonl"))


def test_existing_run_needs_resume(tmp_path, tiny_model_dir):
    run(tmp_path, tiny_model_dir, steps=1)
    with pytest.raises(ValueError, match="--resume"):
        run(tmp_path, tiny_model_dir, steps=1)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, tiny_model_dir):
    @register("test-nan-after-warmup", log_probs="sum", source="test only")
    def nan_loss(batch, *, beta: float = 0.1) -> LossOutput:
        """Finite while the policy equals the reference, NaN once it moves."""
        moved = (batch.policy_chosen_logps - batch.reference_chosen_logps).abs().sum() > 1e-4
        losses = -batch.policy_chosen_logps * 0.01
        return LossOutput(torch.where(moved, losses * float("nan"), losses), losses.detach(), losses.detach())

    try:
        with pytest.raises(NonFiniteLoss, match="non-finite at step 2.*step 1"):
            run(tmp_path, tiny_model_dir, loss="test-nan-after-warmup", steps=4, save_every=1, grad_accum=1)
        assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()
    finally:
        REGISTRY.pop("test-nan-after-warmup", None)


def test_probe_pairs_are_one_probe_set_for_runs_on_other_data(tmp_path, tiny_model_dir):
    """--probe-pairs: the probes are every pair of that file (its unseen candidates too), whatever the run
    trains on: two runs on different pairs log the same step-0 probes, those of a run probing the file itself."""
    probes = write_pairs(tmp_path / "probes.jsonl", n=3)
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": f"No {i}."}) + "\n"
                             for i in range(6)))

    def first_record(pairs, name, **changes):
        config = DPORunConfig(
            model=str(tiny_model_dir), pairs=pairs, loop=LoopConfig(out=tmp_path / name, lr=5e-3, batch_size=2,
                                                                    grad_accum=1, max_steps=1, warmup_ratio=0.0),
            probe_responses=ProbeResponseConfig(greedy=False, samples=0), **changes)
        result = train_dpo(config)
        return read_log(result.out / "metrics.jsonl")[0], json.loads((result.out / "run_config.json").read_text())

    itself, _ = first_record(probes, "itself", probe_size=3)
    fixed, recorded = first_record(other, "fixed", probe_pairs=probes)
    fixed_again, _ = first_record(write_pairs(tmp_path / "eight.jsonl"), "again", probe_pairs=probes)
    keys = ("probe_chosen_logp", "probe_rejected_logp", "probe_unseen_logp", "probe_chosen_logp_per_token")
    assert {k: fixed[k] for k in keys} == {k: fixed_again[k] for k in keys} == {k: itself[k] for k in keys}
    assert recorded["extra"]["probe_size"] == 3 and recorded["extra"]["probe_pairs"] == str(probes)
    assert recorded["extra"]["unseen_candidates"] == 6  # the probe file's 3 pairs x 2 unseen, not the training pairs' 0
