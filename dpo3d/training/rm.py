"""`train-rm`: a Bradley-Terry reward model on the same pairs files as `train-dpo`, same loop.

Logged like a DPO run so the two can be laid side by side (the paper's Fig. 4):
``accuracy`` and ``margin`` of the batch, ``eval_accuracy`` on held-out pairs,
the rewards of each side, and the gradient of the loss on each side's reward
(``reward_grad_chosen`` = −``reward_grad_rejected``, always: the symmetry DPO
lacks) with ``log_grad_chosen`` / ``log_grad_rejected`` their logs, under the
same names DPO uses for log|∂L/∂x1| and log|∂L/∂x2|.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from dpo3d.config.fields import option
from dpo3d.data import inputs
from dpo3d.data.records import write_json
from dpo3d.judges.reward_model import load_reward_model, score_sequences, sequence_rewards
from dpo3d.models import lora
from dpo3d.models.loading import LoadOptions
from dpo3d.models.lora import LoRAConfig
from dpo3d.pairs.pair_set import KEEP_IDENTICAL_HELP, PairSet, load_pairs

from ..losses.reward import bradley_terry_rm
from .config import LoopConfig, is_main_process
from .loop import train
from .run_folder import LoopCallbacks, RunResult
from .task import Task

#: the reward model's learning rate by default (its head starts fresh)
RM_LR = 1e-5


@dataclass
class RMTask(Task):
    pairs: PairSet
    pad_id: int
    margin: float = 0.0
    eval_pairs: PairSet | None = None
    eval_every: int = 0
    score_batch_size: int = 16
    total_steps: int = 0  # set by the loop: the last step is always evaluated

    def lengths(self) -> list[int]:
        return self.pairs.lengths()

    def loss(self, model, indices: list[int]):
        sequences = [self.pairs.chosen[i] for i in indices] + [self.pairs.rejected[i] for i in indices]
        rewards = sequence_rewards(model, sequences, self.pad_id)  # chosen and rejected in one forward
        chosen, rejected = rewards[: len(indices)], rewards[len(indices) :]
        out = bradley_terry_rm(chosen, rejected, self.margin)
        # measured, not assumed: autograd's ∂L/∂r on each side (per pair), through the loss alone
        grad_chosen, grad_rejected = torch.autograd.grad(out.losses.sum(), (chosen, rejected), retain_graph=True)
        metrics = {
            "loss": out.losses,
            "accuracy": (out.margins > 0).float(),
            "margin": out.margins,
            "chosen_reward": chosen,
            "rejected_reward": rejected,
            "reward_grad_chosen": grad_chosen,
            "reward_grad_rejected": grad_rejected,
            "log_grad_chosen": grad_chosen.abs().clamp_min(1e-30).log(),
            "log_grad_rejected": grad_rejected.abs().clamp_min(1e-30).log(),
        }
        return out.loss, metrics

    def evaluate(self, model) -> dict[str, float]:
        pairs = self.eval_pairs
        chosen = score_sequences(model, pairs.chosen, self.pad_id, self.score_batch_size)
        rejected = score_sequences(model, pairs.rejected, self.pad_id, self.score_batch_size)
        out = bradley_terry_rm(chosen, rejected, self.margin)
        return {
            "eval_loss": float(out.loss),
            "eval_accuracy": float((out.margins > 0).float().mean()),
            "eval_margin": float(out.margins.mean()),
        }

    def probe(self, model, step: int, indices: list[int]) -> dict[str, float]:
        due = step in (0, self.total_steps) or (self.eval_every and step % self.eval_every == 0)
        if self.eval_pairs is None or not due:
            return {}
        return self.evaluate(model)

    def check(self, record: dict) -> list[str]:
        return []


@dataclass
class RMRunConfig:
    model: str
    pairs: str | Path | inputs.DataSpec
    loop: LoopConfig
    limit: int | None = None  # read only the first N pairs
    eval_pairs: str | Path | inputs.DataSpec | None = None
    eval_every: int = option(10, "Evaluate the held-out pairs every N steps (and at step 0).", min=0)
    margin: float = option(
        0.0, "Loss -log σ(r_w - r_l - margin): ask the chosen reward to lead by this much.", min=0.0)
    max_length: int = 1024
    keep_identical: bool = option(False, KEEP_IDENTICAL_HELP, flags=("--keep-identical/--drop-identical",))
    load: LoadOptions = field(default_factory=LoadOptions)
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # r = 0: full fine-tuning; the head always trains in full


def train_rm(config: RMRunConfig, callbacks: LoopCallbacks | None = None, on_status=lambda message: None) -> RunResult:
    on_status(f"loading {config.model} with a scalar reward head")
    torch.manual_seed(config.loop.seed)  # the new head's initialisation is part of the run's seed
    model, tokenizer = load_reward_model(config.model, config.load)
    model = lora.for_training(model, config.lora, config.model, kind="reward", seed=config.loop.seed)
    on_status(lora.trainable_summary(model).message())
    on_status("encoding pairs")
    pairs = load_pairs(config.pairs, tokenizer, config.max_length, unseen_limit=0, limit=config.limit,
                       keep_identical=config.keep_identical)
    eval_pairs = (load_pairs(config.eval_pairs, tokenizer, config.max_length, 0, keep_identical=config.keep_identical)
                  if config.eval_pairs else None)
    config.loop.extra = {
        "task": "rm", "model": config.model, "pairs": str(config.pairs),
        **inputs.DataSpec.of(config.pairs).options(), "limit": config.limit, "pairs_read": len(pairs),
        "pairs_identical_dropped": pairs.identical, "keep_identical": config.keep_identical,
        "eval_pairs": str(config.eval_pairs) if config.eval_pairs else None, "margin": config.margin,
        "max_length": config.max_length, "eval_every": config.eval_every, "lora": config.lora.to_json(),
    }
    task = RMTask(pairs, tokenizer.pad_token_id, config.margin, eval_pairs, config.eval_every, config.loop.batch_size * 2)
    on_status("training")
    result = train(model, tokenizer, task, config.loop, callbacks)
    if is_main_process():
        write_json({"final": result.last_record}, Path(config.loop.out) / "summary.json")
        if config.lora.merge:
            on_status(f"merged model → {lora.save_merged(model, tokenizer, Path(config.loop.out) / lora.MERGED_FOLDER)}")
    return result
