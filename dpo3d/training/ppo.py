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

from dpo3d.config.fields import option
from dpo3d.data import inputs, run_lock
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
from .optimizer import adamw
from .ppo_tokens import load_value_model, policy_token_stats, response_grid, token_values, without_dropout
from .run_folder import LoopCallbacks, RunResult, TrainingRun, make_accelerator, stop_unless_finite

VALUE_FOLDER = "value"


#: the shared loop's settings PPO takes (LoopConfig's fields; batches, epochs and the schedule are PPO's own)
LOOP_FIELDS = frozenset({"lr", "max_steps", "seed", "log_every", "save_every", "resume", "max_grad_norm", "mixed_precision",
                         "gradient_checkpointing", "keep_host_memory", "report_to"})
#: where PPO's default for a loop setting differs from LoopConfig's, and what the setting means here
LOOP_DEFAULTS = {"max_steps": 20}
LOOP_HELP = {"max_steps": "PPO steps (each: one rollout batch, then --ppo-epochs of updates).",
             "lr": "Policy learning rate (AdamW, constant)."}


@dataclass
class PPOConfig:
    """A PPO run: the shared loop's section (``loop``: out, lr, max_steps, seed, cadence, precision, ...),
    the model, prompts and reward, LoRA, and PPO's own settings, each with its default and help here."""

    model: str
    prompts: str | inputs.DataSpec  # a built-in name or any source (with its --subset and --columns)
    reward: str
    loop: LoopConfig
    ref: str | None = option(None, "Reference policy for the KL penalty (default: the starting --model).")
    value_model: str | None = option(
        None, "Start of the value model (default: the reward model for rm:..., else --model).")
    limit: int | None = None
    rollout_batch: int = option(8, "Prompts rolled out per process per step.", min=1)
    minibatch: int = option(4, "Rollouts per optimizer step.", min=1)
    ppo_epochs: int = option(4, "Passes over each rollout batch.", min=1)
    value_lr: float | None = option(
        None, "Value-model learning rate (default 10 × --lr: its head starts fresh).")
    kl_coef: float = option(0.05, "β of the per-token KL penalty -β·(log π - log π_ref).", min=0.0)
    gae_gamma: float = option(1.0, "GAE discount γ (train-dpo's --loss-arg gamma is SimPO's margin).")
    lam: float = option(0.95, "GAE λ.")
    clip_range: float = option(0.2, "ε of the clipped surrogate: the ratio π/π_old is kept in [1-ε, 1+ε].")
    clip_range_value: float = option(0.2, "How far a value prediction may move per rollout.")
    vf_coef: float = option(0.1, "Weight of the value loss.")
    temperature: float = option(0.7, "Sampling temperature (log-probs are taken at the same temperature).", min=0.0)
    max_new_tokens: int = option(128, "Response length cap.", min=1)
    max_prompt_length: int = option(512, "Keep the last N tokens of a longer prompt.", min=1)
    missing_eos_penalty: float | None = option(
        None, "Score given to a response cut at --max-new-tokens (e.g. -1).")
    load: LoadOptions = field(default_factory=LoadOptions)
    # r > 0: LoRA on the policy and the value model; the KL reference is then the policy with its adapter off
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def __post_init__(self) -> None:
        if self.loop.max_steps is None:  # LoopConfig's None means "from --epochs", which PPO has not
            self.loop.max_steps = LOOP_DEFAULTS["max_steps"]

    @property
    def out(self) -> Path:
        return Path(self.loop.out)

    @property
    def steps(self) -> int:
        return int(self.loop.max_steps)

    def validate(self) -> None:
        if self.steps < 1 or self.rollout_batch < 1 or self.minibatch < 1 or self.ppo_epochs < 1:
            raise ValueError("--max-steps, --rollout-batch, --minibatch and --ppo-epochs must be at least 1")
        if self.minibatch > self.rollout_batch:
            raise ValueError("--minibatch cannot exceed --rollout-batch")
        if self.loop.lr <= 0 or self.kl_coef < 0 or self.temperature <= 0:
            raise ValueError("--lr and --temperature must be positive, --kl-coef >= 0")
        if not (0 <= self.gae_gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError("--gae-gamma and --lam must lie in [0, 1]")
        if self.clip_range <= 0 or self.clip_range_value <= 0:
            raise ValueError("--clip-range and --clip-range-value must be positive")
        precision.resolve(self.loop.mixed_precision)
        tracking.parse(self.loop.report_to)
        self.lora.validate()

    def to_json(self) -> dict:
        """run_config.json's fields: the loop's settings PPO takes beside PPO's own, one flat table as before."""
        data = {key: value for key, value in asdict(self).items() if key != "loop"}
        loop = self.loop.to_json()
        data.update({key: loop[key] for key in (*sorted(LOOP_FIELDS), "out", "cpu", "invocation")})
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
        self.accelerator, self.trackers_wanted = make_accelerator(config.loop.cpu, config.loop.mixed_precision, config.loop.report_to,
                                                                  config.out)
        sharding.check_ppo_supported(self.accelerator)
        if self.accelerator.is_main_process:  # another live run on --out: refused before the models load
            run_lock.check_free(config.out)
        set_seed(config.loop.seed)
        self.out = config.out
        on_status(f"loading {config.model} (policy), its reference and a value model")
        self.tokenizer = load_tokenizer(config.model, config.load)
        policy = load_causal_lm(config.model, config.load)
        # dropout off after the adapter is added: the LoRA path's dropout too
        self.policy = without_dropout(lora.for_training(policy, config.lora, config.model, seed=config.loop.seed))
        self.ref = None  # a LoRA policy is its own reference: the base, with the adapter switched off
        if not (config.lora.enabled and config.ref in (None, config.model)):
            self.ref = load_causal_lm(config.ref or config.model, config.load).to(self.accelerator.device)
            self.ref.requires_grad_(False)
        value_spec = config.value_model or (config.reward[3:] if config.reward.startswith("rm:") else config.model)
        value = lora.for_training(load_value_model(value_spec, config.load), config.lora, value_spec, "value", config.loop.seed)
        self.value = without_dropout(value)
        on_status(lora.trainable_summary(self.policy, self.value).message() + " (policy and value model)")
        self.reward_fn = make_reward(config.reward, self.accelerator.device, config.load, config.max_prompt_length + config.max_new_tokens)
        self.prompts = load_prompts(config.prompts, limit=config.limit)
        self._check_prompts()
        self.encoded = [encode_prompt(self.tokenizer, r["prompt"], keep_last=config.max_prompt_length) for r in self.prompts]

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
        random.Random(f"ppo:{self.config.loop.seed}:{epoch}").shuffle(order)
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
                                  batch_size=len(indices), seed=cfg.loop.seed)
        torch.manual_seed(chunk_seed(cfg.loop.seed, step * 1000 + self.accelerator.process_index))
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
        generator = torch.Generator().manual_seed(chunk_seed(cfg.loop.seed, 7919 * step + 1))
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
                if cfg.loop.max_grad_norm:  # each model clipped on its own: value gradients cannot shrink the policy's step
                    clip_each(self.accelerator, (policy_params, value_params), cfg.loop.max_grad_norm)
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
            if cfg.loop.gradient_checkpointing:
                precision.enable_gradient_checkpointing(model)
        optimizer = adamw(
            [{"params": [p for p in self.policy.parameters() if p.requires_grad], "lr": cfg.loop.lr},
             {"params": [p for p in self.value.parameters() if p.requires_grad], "lr": cfg.value_lr or 10 * cfg.loop.lr}],
            eps=1e-5,
        )
        # the run folder's lock, log and trackers for everything from opening the folder to the final model
        with TrainingRun(out, acc, self.trackers_wanted, self.callbacks, cfg.loop.save_every) as run:
            state = run.resume_state(cfg.loop.resume, self.policy, {VALUE_FOLDER: self.value},
                                     log_every=cfg.loop.log_every, logs_step_zero=False)
            start = state.step if state is not None else 0
            policy, value, optimizer = acc.prepare(self.policy, self.value, optimizer)
            if state is not None:
                optimizer.load_state_dict(state.optimizer)
                torch.set_rng_state(state.torch_rng)
            run.start({"steps": cfg.steps, "processes": acc.num_processes, "extra": {"task": "ppo"}, **cfg.to_json(),
                       "mixed_precision": acc.mixed_precision})
            unwrapped_policy, unwrapped_value = acc.unwrap_model(policy), acc.unwrap_model(value)
            self.callbacks.on_start(start, cfg.steps)
            last = self._steps(run, start, policy, value, optimizer, unwrapped_policy, unwrapped_value)
            run.finish(unwrapped_policy, self.tokenizer, cfg.steps, extra_models={VALUE_FOLDER: unwrapped_value})
        if acc.is_main_process:
            write_json({"final": last}, out / "summary.json")
            if cfg.lora.merge:
                self.status(f"merged policy → {lora.save_merged(unwrapped_policy, self.tokenizer, out / lora.MERGED_FOLDER)}")
        acc.wait_for_everyone()
        gc.collect()
        return RunResult(cfg.steps, out, last)

    def _steps(self, run: TrainingRun, start: int, policy, value, optimizer, unwrapped_policy, unwrapped_value) -> dict:
        """The PPO steps from ``start``, their logs and checkpoints; the last logged record."""
        cfg, acc = self.config, self.accelerator
        last: dict = {}
        training = time.perf_counter()
        for step in range(start, cfg.steps):
            began = time.perf_counter()
            with acc.autocast():  # generation, the old policy's, the reference's and the values' numbers
                rollout = self.rollout(step, unwrapped_policy, unwrapped_value)
            update = self.update(step, rollout, policy, value, optimizer)
            done = step + 1
            self.callbacks.on_step(done)
            if done % cfg.loop.log_every == 0 or done == cfg.steps:
                last = run.log(json_safe(self._record(done, rollout, update, time.perf_counter() - began)))
            if cfg.loop.save_every and done % cfg.loop.save_every == 0 and done < cfg.steps:
                run.save_checkpoint(unwrapped_policy, self.tokenizer,
                                    checkpoint.TrainerState(done, optimizer.state_dict(), {}, torch.get_rng_state()),
                                    {VALUE_FOLDER: unwrapped_value})
        trained = cfg.steps - start
        self.callbacks.on_stage(f"training ({trained} step{'s' if trained != 1 else ''})", time.perf_counter() - training)
        return last


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
    on_cpu = precision.run_device(config.loop.cpu).type == "cpu"
    with host_memory.kept(config.loop.keep_host_memory and on_cpu):  # rollouts and updates reuse their pages
        return PPOTrainer(config, callbacks, on_status).train()
