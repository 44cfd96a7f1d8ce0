"""PPO on tiny models: it raises a rule reward with the KL bounded, resumes exactly, refuses bad input,
and writes a policy folder the other commands load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpo3d.data.run_log import read_log
from dpo3d.training.config import LoopConfig
from dpo3d.training.ppo import LOOP_FIELDS, PPOConfig, train_ppo
from dpo3d.training.ppo_tokens import load_value_model
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.training.sft import SFTRunConfig, train_sft

from .commands import dpo3d
from .launching import port_args

ROOT = Path(__file__).resolve().parents[1]


def question(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}?"}]


@pytest.fixture(scope="module")
def yes_no(tmp_path_factory, tiny_model_dir):
    """A tiny policy taught to answer 'yes' or 'no' about half the time each, and its prompts."""
    folder = tmp_path_factory.mktemp("ppo")
    rows = [{"prompt": question(i), "completion": "yes" if i % 2 else "no"} for i in range(32)]
    (folder / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loop = LoopConfig(out=folder / "sft", lr=1e-2, batch_size=8, grad_accum=1, max_steps=30, warmup_ratio=0, schedule="constant")
    train_sft(SFTRunConfig(model=str(tiny_model_dir), data=str(folder / "sft.jsonl"), loop=loop))
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": question(i)}) + "\n" for i in range(32)))
    return folder / "sft", prompts


def config(policy, prompts, out, **overrides) -> PPOConfig:
    settings = {"reward": "contains:yes", "max_steps": 10, "rollout_batch": 16, "minibatch": 8, "ppo_epochs": 2, "lr": 1e-3,
                "max_new_tokens": 4, "temperature": 1.0, "kl_coef": 0.05, **overrides}
    shared = {name: settings.pop(name) for name in LOOP_FIELDS if name in settings}
    return PPOConfig(model=str(policy), prompts=str(prompts), loop=LoopConfig(out=out, **shared), **settings)


def test_ppo_raises_a_rule_reward_with_the_kl_bounded(yes_no, tmp_path):
    policy, prompts = yes_no
    result = train_ppo(config(policy, prompts, tmp_path / "ppo"))
    records = read_log(result.out / "metrics.jsonl")
    rewards = [r["reward"] for r in records]
    assert [r["step"] for r in records] == list(range(1, 11))
    assert 0.2 <= rewards[0] <= 0.8  # the start says yes about half the time
    assert sum(rewards[-3:]) / 3 >= max(0.85, rewards[0] + 0.2)
    assert all(0 <= r["kl"] < 5 for r in records)  # nats per response, anchored by the penalty
    for key in ("entropy", "clip_fraction", "value_loss", "policy_loss", "response_length", "approx_kl"):
        assert isinstance(records[-1][key], float)
    # the policy folder loads as a causal LM for sample/logprobs, the value model as a token classifier
    from dpo3d.models.loading import load_causal_lm

    load_causal_lm(str(result.out))
    load_value_model(str(result.out / "value"), load_causal_lm.__defaults__[0])
    from dpo3d.training.plots import plot_panels

    assert plot_panels(result.out, "ppo").stat().st_size > 20_000  # OUT/curves.png


class Stop(Exception):
    pass


def test_resume_after_a_crash_ends_like_an_uninterrupted_run(yes_no, tmp_path):
    policy, prompts = yes_no
    whole = train_ppo(config(policy, prompts, tmp_path / "whole", max_steps=4))

    def crash(step):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train_ppo(config(policy, prompts, tmp_path / "cut", max_steps=4, save_every=2), LoopCallbacks(on_step=crash))
    resumed = train_ppo(config(policy, prompts, tmp_path / "cut", max_steps=4, save_every=2, resume=True))
    strip = lambda path: [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(path)]  # noqa: E731
    assert strip(resumed.out / "metrics.jsonl") == strip(whole.out / "metrics.jsonl")


def test_bad_reward_and_prompts_without_answers_stop_with_one_line(yes_no, tmp_path):
    policy, prompts = yes_no
    bad = dpo3d("ppo", "--prompts", str(prompts), "--reward", "nonsense", "--model", str(policy), "--out", str(tmp_path / "a"))
    assert bad.returncode == 2 and "--reward 'nonsense'" in bad.stderr
    math = dpo3d("ppo", "--prompts", str(prompts), "--reward", "math", "--model", str(policy), "--out", str(tmp_path / "b"))
    assert math.returncode == 2 and "prompts.jsonl:1: --reward math needs field(s) answer" in math.stderr
    assert not (tmp_path / "b" / "metrics.jsonl").exists()


@pytest.mark.skipif(not (Path(sys.executable).parent / "accelerate").exists(), reason="accelerate CLI")
def test_two_process_accelerate_run(yes_no, tmp_path):
    import os

    policy, prompts = yes_no
    launcher = str(Path(sys.executable).parent / "accelerate")
    result = subprocess.run(
        [launcher, "launch", *port_args(), "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "dpo3d", "ppo", "--prompts", str(prompts), "--reward", "contains:yes",
         "--model", str(policy), "--out", str(tmp_path / "two"), "--max-steps", "2", "--rollout-batch", "4",
         "--minibatch", "2", "--ppo-epochs", "1", "--max-new-tokens", "4", "--temperature", "1.0", "--lr", "1e-3",
         "--device", "cpu"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "two" / "run_config.json").read_text())["processes"] == 2
    records = read_log(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]  # one line per step, from the main process only
    assert 0.0 <= records[-1]["reward"] <= 1.0
