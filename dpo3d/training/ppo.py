"""`ppo`: RLHF-PPO on prompts — rollouts, a frozen reference for the per-token KL, a value model, GAE.

Each step: take a batch of prompts, sample one response each from the policy,
score it (``dpo3d.judges.rewards``), measure the old policy's, the reference's and the
value model's per-token numbers, turn the score minus the KL penalty into
advantages with GAE (whitened), then run ``ppo_epochs`` passes of minibatch
updates on the clipped surrogate and the clipped value loss (one optimizer over
policy and value). The losses are the pure functions of
:mod:`dpo3d.losses.ppo`; checkpoints, resume, metrics and the final folder use
the same pieces as the other trainers (:mod:`.checkpoint`, :mod:`.loop`).

Under ``accelerate launch`` each process rolls out its share of every step's
prompts and the gradients are averaged, as in the other trainers.
"""

from __future__ import annotations

import contextlib
import gc
import random
import statistics
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed

from dpo3d.data import inputs
from dpo3d.data.datasets import load_prompts
from dpo3d.data.records import RecordError, json_safe, write_json
from dpo3d.data.sequences import EncodedPair, encode_prompt
from dpo3d.generation.sampler import SamplingConfig, chunk_seed, generate_ids
from dpo3d.judges.rewards import make_reward, needed_fields
from dpo3d.models import host_memory, lora
from dpo3d.models.loading import LoadOptions, load_causal_lm, load_tokenizer
from dpo3d.models.lora import LoRAConfig
from dpo3d.scoring.batches import collate

from ..losses.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
)
from . import checkpoint, precision, sharding, tracking
from .config import LoopConfig
from .ppo_tokens import load_value_model, policy_token_stats, response_grid, token_values, without_dropout
from .run_folder import LoopCallbacks, RunResult, TrainingRun, make_accelerator, stop_unless_finite

VALUE_FOLDER = "value"


@dataclass
class PPOConfig:
    model: str
    prompts: str | inputs.DataSpec  # a built-in name or any source (with its --subset and --columns)
    out: Path
    reward: str
    ref: str | None = None  # the KL anchor; default: the starting policy
    value_model: str | None = None  # default: the reward model for rm:..., else the starting policy
    limit: int | None = None
    max_steps: int = 20
    rollout_batch: int = 8  # prompts per process per step
    minibatch: int = 4
    ppo_epochs: int = 4
    lr: float = 1e-6
    value_lr: float | None = None  # default: 10 × lr (a fresh value head must move faster than the policy)
    kl_coef: float = 0.05
    gae_gamma: float = 1.0  # the GAE discount (train-dpo's gamma is SimPO's margin)
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    temperature: float = 0.7
    max_new_tokens: int = 128
    max_prompt_length: int = 512
    missing_eos_penalty: float | None = None  # replaces the score of a response cut at max_new_tokens
    max_grad_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 1
    save_every: int = 0
    resume: bool = False
    cpu: bool = False
    mixed_precision: str | None = LoopConfig.mixed_precision
    gradient_checkpointing: bool = LoopConfig.gradient_checkpointing
    keep_host_memory: bool = LoopConfig.keep_host_memory
    report_to: str = LoopConfig.report_to
    load: LoadOptions = field(default_factory=LoadOptions)
    # r > 0: LoRA on the policy and the value model; the KL reference is then the policy with its adapter off
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    invocation: dict | None = None  # the command line that started the run (run_config.json; --config replays it)

    def validate(self) -> None:
        if self.max_steps < 1 or self.rollout_batch < 1 or self.minibatch < 1 or self.ppo_epochs < 1:
            raise ValueError("--max-steps, --rollout-batch, --minibatch and --ppo-epochs must be at least 1")
        if self.minibatch > self.rollout_batch:
            raise ValueError("--minibatch cannot exceed --rollout-batch")
        if self.lr <= 0 or self.kl_coef < 0 or self.temperature <= 0:
            raise ValueError("--lr and --temperature must be positive, --kl-coef >= 0")
        if not (0 <= self.gae_gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError("--gae-gamma and --lam must lie in [0, 1]")
        if self.clip_range <= 0 or self.clip_range_value <= 0:
            raise ValueError("--clip-range and --clip-range-value must be positive")
        precision.resolve(self.mixed_precision)
        tracking.parse(self.report_to)
        self.lora.validate()

    def to_json(self) -> dict:
        data = asdict(self)
        data["out"] = str(self.out)
        data["prompts"] = str(self.prompts)
        data.update(inputs.DataSpec.of(self.prompts).options())
        data["load"] = {"dtype": str(self.load.dtype), "trust_remote_code": self.load.trust_remote_code}
        return data


@dataclass
class Rollout:
    sequences: list[EncodedPair]
    mask: torch.Tensor  # (B, R) 1 on response tokens
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    scores: torch.Tensor
    kl: torch.Tensor
    stopped: list[bool]
    completions: list[str]


# --------------------------------------------------------------------------- the trainer


class PPOTrainer:
    def __init__(self, config: PPOConfig, callbacks: LoopCallbacks | None = None, on_status=lambda message: None):
        config.validate()
        self.config, self.callbacks, self.status = config, callbacks or LoopCallbacks(), on_status
        self.accelerator, self.trackers_wanted = make_accelerator(config.cpu, config.mixed_precision, config.report_to,
                                                                  Path(config.out))
        sharding.check_ppo_supported(self.accelerator)
        set_seed(config.seed)
        self.out = Path(config.out)
        on_status(f"loading {config.model} (policy), its reference and a value model")
        self.tokenizer = load_tokenizer(config.model, config.load)
        policy = load_causal_lm(config.model, config.load)
        # dropout off after the adapter is added: the LoRA path's dropout too
        self.policy = without_dropout(lora.for_training(policy, config.lora, config.model, seed=config.seed))
        self.ref = None  # a LoRA policy is its own reference: the base, with the adapter switched off
        if not (config.lora.enabled and config.ref in (None, config.model)):
            self.ref = load_causal_lm(config.ref or config.model, config.load).to(self.accelerator.device)
            self.ref.requires_grad_(False)
        value_spec = config.value_model or (config.reward[3:] if config.reward.startswith("rm:") else config.model)
        value = lora.for_training(load_value_model(value_spec, config.load), config.lora, value_spec, "value", config.seed)
        self.value = without_dropout(value)
        on_status(lora.trainable_summary(self.policy, self.value).message() + " (policy and value model)")
        self.reward_fn = make_reward(config.reward, self.accelerator.device, config.load, config.max_prompt_length + config.max_new_tokens)
        self.prompts = load_prompts(config.prompts, limit=config.limit)
        self._check_prompts()
        self.encoded = [encode_prompt(self.tokenizer, r["prompt"])[-config.max_prompt_length :] for r in self.prompts]

    def _check_prompts(self) -> None:
        """Every prompt carries what the reward needs; a rule reward is tried on each (empty answer) now,
        so a bad record stops the run before any training, naming its line."""
        need = needed_fields(self.config.reward)
        rule = self.config.reward in ("poem", "slogan")
        for number, record in enumerate(self.prompts, start=1):
            missing = [key for key in ("prompt", *need) if record.get(key) is None]
            if missing:
                raise RecordError(str(self.config.prompts), number, f"--reward {self.config.reward} needs field(s) {', '.join(missing)}")
            if rule:
                try:
                    self.reward_fn([{**record, "completion": ""}])
                except ValueError as err:
                    raise RecordError(str(self.config.prompts), number, str(err)) from None

    # ---------------------------------------------------------------- data order

    def _step_prompts(self, step: int) -> list[int]:
        acc = self.accelerator
        global_size = self.config.rollout_batch * acc.num_processes
        per_epoch = max(1, len(self.prompts) // global_size) if len(self.prompts) >= global_size else 1
        epoch, slot = divmod(step, per_epoch)
        order = list(range(len(self.prompts)))
        random.Random(f"ppo:{self.config.seed}:{epoch}").shuffle(order)
        while len(order) < global_size:  # fewer prompts than one global batch: reuse them
            order += order
        chosen = order[slot * global_size : (slot + 1) * global_size]
        return chosen[acc.process_index :: acc.num_processes]

    # ---------------------------------------------------------------- rollout

    @torch.no_grad()
    def rollout(self, step: int, policy, value) -> Rollout:
        cfg = self.config
        indices = self._step_prompts(step)
        sampling = SamplingConfig(n=1, temperature=cfg.temperature, top_p=1.0, max_new_tokens=cfg.max_new_tokens,
                                  batch_size=len(indices), seed=cfg.seed)
        torch.manual_seed(chunk_seed(cfg.seed, step * 1000 + self.accelerator.process_index))
        policy.eval()
        value.eval()
        generated = generate_ids(policy, self.tokenizer, [self.encoded[i] for i in indices], sampling)
        sequences = [EncodedPair(list(self.encoded[i]), ids) for i, (ids, _) in zip(indices, generated, strict=True)]
        stopped = [done for _, done in generated]
        completions = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in generated]
        records = [{**self.prompts[i], "completion": text} for i, text in zip(indices, completions, strict=True)]
        scores = torch.tensor(self.reward_fn(records), dtype=torch.float32)
        if cfg.missing_eos_penalty is not None:
            scores = torch.where(torch.tensor(stopped), scores, torch.full_like(scores, cfg.missing_eos_penalty))
        device = self.accelerator.device
        batch = collate(sequences, self.tokenizer.pad_token_id, "right").to(device)
        lengths = torch.tensor([len(s.response_ids) for s in sequences], device=device)
        old_logprobs, _ = policy_token_stats(policy, batch, lengths, cfg.temperature)
        with lora.adapter_disabled(policy) if self.ref is None else contextlib.nullcontext(self.ref) as reference:
            ref_logprobs, _ = policy_token_stats(reference, batch, lengths, cfg.temperature)
        old_values = token_values(value, batch, lengths)
        _, mask = response_grid(batch, lengths)
        mask = mask.float()
        scores = scores.to(device)
        rewards, kl = kl_penalised_rewards(old_logprobs, ref_logprobs, scores, mask, cfg.kl_coef)
        advantages, returns = gae(rewards, old_values, mask, cfg.gae_gamma, cfg.lam)
        advantages = whiten_advantages(self.accelerator, advantages, mask)
        return Rollout(sequences, mask, old_logprobs, ref_logprobs, old_values, advantages, returns, scores, kl,
                       stopped, completions)

    # ---------------------------------------------------------------- update

    def update(self, step: int, rollout: Rollout, policy, value, optimizer) -> dict[str, float]:
        cfg = self.config
        n = len(rollout.sequences)
        stats: dict[str, list[float]] = defaultdict(list)
        generator = torch.Generator().manual_seed(chunk_seed(cfg.seed, 7919 * step + 1))
        policy.train()
        value.train()
        policy_params, value_params = (group["params"] for group in optimizer.param_groups)
        device = self.accelerator.device
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=generator).tolist()
            for start in range(0, n, cfg.minibatch):
                rows = order[start : start + cfg.minibatch]
                sequences = [rollout.sequences[i] for i in rows]
                batch = collate(sequences, self.tokenizer.pad_token_id, "right").to(device)
                lengths = torch.tensor([len(s.response_ids) for s in sequences], device=device)
                width = int(lengths.max())
                index = torch.tensor(rows, device=device)

                def pick(tensor: torch.Tensor, index=index, width=width) -> torch.Tensor:
                    return tensor[index][:, :width]

                mask = pick(rollout.mask)
                with self.accelerator.autocast():
                    logprobs, entropy = policy_token_stats(policy, batch, lengths, cfg.temperature, entropy=True)
                    values = token_values(value, batch, lengths)
                    pg = clipped_policy_loss(logprobs, pick(rollout.old_logprobs), pick(rollout.advantages), mask, cfg.clip_range)
                    vf = clipped_value_loss(values, pick(rollout.old_values), pick(rollout.returns), mask, cfg.clip_range_value)
                    loss = pg.loss + cfg.vf_coef * vf.loss
                stop_unless_finite(self.accelerator, bool(torch.isfinite(loss.detach())), self.out, step + 1,
                                   "PPO loss", "Lower --lr or raise --kl-coef, then --resume.")
                self.accelerator.backward(loss)
                if cfg.max_grad_norm:  # each model clipped on its own: value gradients cannot shrink the policy's step
                    clip_each(self.accelerator, (policy_params, value_params), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                stats["policy_loss"].append(float(pg.loss.detach()))
                stats["value_loss"].append(float(vf.loss.detach()))
                stats["clip_fraction"].append(float(pg.clip_fraction))
                stats["value_clip_fraction"].append(float(vf.clip_fraction))
                stats["approx_kl"].append(float(pg.approx_kl))
                stats["entropy"].append(float(masked_mean(entropy.detach(), mask)))
        return {key: statistics.fmean(values) for key, values in stats.items()}

    # ---------------------------------------------------------------- the run

    def _record(self, step: int, rollout: Rollout, update: dict[str, float], seconds: float) -> dict:
        acc = self.accelerator
        mask = rollout.mask
        local = torch.stack([
            rollout.scores.float().mean(),
            (rollout.kl * mask).sum(1).mean(),
            mask.sum(1).mean(),
            torch.tensor(sum(rollout.stopped) / len(rollout.stopped), device=mask.device),
            masked_mean(rollout.returns, mask),
            masked_mean(rollout.old_values, mask),
        ])
        reward, kl, length, stopped, returns, values = acc.reduce(local, "mean").tolist()
        return {
            "step": step, "reward": reward, "kl": kl, "response_length": length, "eos_rate": stopped,
            "return_mean": returns, "value_mean": values, **update,
            "reward_std": float(rollout.scores.float().std()) if len(rollout.scores) > 1 else 0.0,
            "seconds": seconds, "example": rollout.completions[0][:300],
        }

    def train(self) -> RunResult:
        cfg, acc, out = self.config, self.accelerator, self.out
        for model in (self.policy, self.value):
            if (low := precision.low_precision_warning(model)) is not None:
                warnings.warn(low, stacklevel=2)
            if cfg.gradient_checkpointing:
                precision.enable_gradient_checkpointing(model)
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in self.policy.parameters() if p.requires_grad], "lr": cfg.lr},
             {"params": [p for p in self.value.parameters() if p.requires_grad], "lr": cfg.value_lr or 10 * cfg.lr}],
            eps=1e-5,
        )
        run = TrainingRun(out, acc, self.trackers_wanted, self.callbacks)
        state = run.resume_state(cfg.resume, self.policy, {VALUE_FOLDER: self.value})
        start = state.step if state is not None else 0
        policy, value, optimizer = acc.prepare(self.policy, self.value, optimizer)
        if state is not None:
            optimizer.load_state_dict(state.optimizer)
            torch.set_rng_state(state.torch_rng)
        run.start({"steps": cfg.max_steps, "processes": acc.num_processes, "extra": {"task": "ppo"}, **cfg.to_json(),
                   "mixed_precision": acc.mixed_precision})
        unwrapped_policy, unwrapped_value = acc.unwrap_model(policy), acc.unwrap_model(value)
        self.callbacks.on_start(start, cfg.max_steps)
        last: dict = {}
        training = time.perf_counter()
        with run:
            for step in range(start, cfg.max_steps):
                began = time.perf_counter()
                with acc.autocast():  # generation, the old policy's, the reference's and the values' numbers
                    rollout = self.rollout(step, unwrapped_policy, unwrapped_value)
                update = self.update(step, rollout, policy, value, optimizer)
                done = step + 1
                self.callbacks.on_step(done)
                if done % cfg.log_every == 0 or done == cfg.max_steps:
                    last = run.log(json_safe(self._record(done, rollout, update, time.perf_counter() - began)))
                if cfg.save_every and done % cfg.save_every == 0 and done < cfg.max_steps:
                    run.save_checkpoint(unwrapped_policy, self.tokenizer,
                                        checkpoint.TrainerState(done, optimizer.state_dict(), {}, torch.get_rng_state()),
                                        {VALUE_FOLDER: unwrapped_value})
        trained = cfg.max_steps - start
        self.callbacks.on_stage(f"training ({trained} step{'s' if trained != 1 else ''})", time.perf_counter() - training)
        run.finish(unwrapped_policy, self.tokenizer, cfg.max_steps, extra_models={VALUE_FOLDER: unwrapped_value})
        if acc.is_main_process:
            write_json({"final": last}, out / "summary.json")
            if cfg.lora.merge:
                self.status(f"merged policy → {lora.save_merged(unwrapped_policy, self.tokenizer, out / lora.MERGED_FOLDER)}")
        acc.wait_for_everyone()
        gc.collect()
        return RunResult(cfg.max_steps, out, last)


def whiten_advantages(accelerator, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Advantages whitened over every process's rollouts: N processes train like one with the global batch."""
    return masked_whiten(advantages, mask, total=lambda tensor: accelerator.reduce(tensor.float(), "sum"))


def clip_each(accelerator, groups, max_norm: float) -> None:
    """Clip each parameter group's gradient norm on its own. fp16's loss scaling is undone once, first
    (accelerate's clip_grad_norm_ would unscale again per group, which the scaler refuses)."""
    if accelerator.scaler is None:
        for params in groups:
            accelerator.clip_grad_norm_(params, max_norm)
        return
    accelerator.unscale_gradients()
    for params in groups:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def train_ppo(config: PPOConfig, callbacks: LoopCallbacks | None = None, on_status=lambda message: None) -> RunResult:
    on_cpu = precision.run_device(config.cpu).type == "cpu"
    with host_memory.kept(config.keep_host_memory and on_cpu):  # rollouts and updates reuse their pages
        return PPOTrainer(config, callbacks, on_status).train()
