"""What the shared loop reports: the learning rate a step used, and each stage's time."""

from __future__ import annotations

import pytest
import torch

from dpo3d.data.run_log import read_log
from dpo3d.training.config import LoopConfig
from dpo3d.training.loop import train
from dpo3d.training.run_folder import LoopCallbacks
from dpo3d.training.task import Task

LR = 0.03


class MeanLogit(Task):
    """The smallest task: the mean logit of a fixed token sequence (one example per index); probes,
    checks and the rest keep the interface's defaults."""

    def lengths(self) -> list[int]:
        return [4] * 4

    def loss(self, model, indices):
        tokens = torch.tensor([[1, 2, 3, 4]] * len(indices), device=model.device)
        logits = model(input_ids=tokens).logits
        return logits.mean(), {"mean_logit": logits.detach().mean(dim=(1, 2))}


def run(tmp_path, tokenizer, steps: int, callbacks: LoopCallbacks | None = None):
    from dpo3d.models.tiny import tiny_causal_lm

    config = LoopConfig(out=tmp_path / f"run{steps}", lr=LR, batch_size=4, grad_accum=1, max_steps=steps,
                        warmup_ratio=0.0, schedule="linear", log_every=1, cpu=True)
    train(tiny_causal_lm(tokenizer, seed=0), tokenizer, MeanLogit(), config, callbacks)
    return [record for record in read_log(config.out / "metrics.jsonl") if record["step"] > 0]


@pytest.mark.parametrize("steps, expected", [
    (1, [LR]),  # linear decay over 1 step, no warm-up: step 1 trains at the peak (the next step's lr is 0)
    (3, [LR, LR * 2 / 3, LR / 3]),  # step k of 3 (from 0) trains at LR · (3 − k) / 3
])
def test_the_logged_lr_is_the_one_the_step_used(tmp_path, tokenizer, steps, expected):
    records = run(tmp_path, tokenizer, steps)
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert [r["lr"] for r in records] == pytest.approx(expected, rel=1e-9)


def test_each_stage_reports_its_time(tmp_path, tokenizer):
    stages: list[tuple[str, float]] = []
    run(tmp_path, tokenizer, 2, LoopCallbacks(on_stage=lambda name, seconds: stages.append((name, seconds))))
    names = [name for name, _ in stages]
    assert names == ["step-0 measurements", "training (2 steps)", "saving the final model"]
    assert all(seconds >= 0 for _, seconds in stages)


def test_a_task_must_give_its_lengths_and_loss():
    class Incomplete(Task):
        def lengths(self) -> list[int]:
            return [1]

    with pytest.raises(TypeError, match="loss"):
        Incomplete()
    task = MeanLogit()
    assert (task.probe(None, 0, []), task.check({}), task.resume([], None), task.probe_gradients) == ({}, [], [], False)
    assert task.control().stop is False and task.logprob_options is None
