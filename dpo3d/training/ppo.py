"""`ppo`: RLHF-PPO on prompts — rollouts, a frozen reference for the per-token KL, a value model, GAE.

Each step: take a batch of prompts, sample one response each from the policy,
score it (``dpo3d.rewards``), measure the old policy's, the reference's and the
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

import gc
import random
import shutil
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..datasets import load_prompts
from ..generation import SamplingConfig, chunk_seed, generate_ids
from ..logprobs import collate
from ..losses.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
)
from ..models import LoadOptions, load_causal_lm, load_tokenizer
from ..records import AppendLog, RecordError, json_safe, write_json
from ..rewards import make_reward, needed_fields
from ..sequences import EncodedPair, encode_prompt
from . import checkpoint
from .loop import LoopCallbacks, RunResult, open_run, save_final, stop_unless_finite, truncate_metrics
from .ppo_tokens import load_value_model, policy_token_stats, response_grid, token_values, without_dropout

VALUE_FOLDER = "value"


@dataclass
class PPOConfig:
    model: str
    prompts: str
    out: Path
    reward: str
    ref: str | None = None  # the KL anchor; default: the starting policy
    value_model: str | None = None  # default: the reward model for rm:..., else the starting policy
    limit: int | None = None
    steps: int = 20
    rollout_batch: int = 8  # prompts per process per step
    minibatch: int = 4
    ppo_epochs: int = 4
    lr: float = 1e-6
    value_lr: float | None = None  # default: 10 × lr (a fresh value head must move faster than the policy)
    kl_coef: float = 0.05
    gamma: float = 1.0
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
    load: LoadOptions = field(default_factory=LoadOptions)

    def validate(self) -> None:
        if self.steps < 1 or self.rollout_batch < 1 or self.minibatch < 1 or self.ppo_epochs < 1:
            raise ValueError("--steps, --rollout-batch, --minibatch and --ppo-epochs must be at least 1")
        if self.minibatch > self.rollout_batch:
            raise ValueError("--minibatch cannot exceed --rollout-batch")
        if self.lr <= 0 or self.kl_coef < 0 or self.temperature <= 0:
            raise ValueError("--lr and --temperature must be positive, --kl-coef >= 0")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError("--gamma and --lam must lie in [0, 1]")
        if self.clip_range <= 0 or self.clip_range_value <= 0:
            raise ValueError("--clip-range and --clip-range-value must be positive")

    def to_json(self) -> dict:
        data = asdict(self)
        data["out"] = str(self.out)
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
        self.accelerator = Accelerator(cpu=config.cpu)
        set_seed(config.seed)
        self.out = Path(config.out)
        on_status(f"loading {config.model} (policy), its reference and a value model")
        self.tokenizer = load_tokenizer(config.model, config.load)
        self.policy = without_dropout(load_causal_lm(config.model, config.load))
        self.ref = load_causal_lm(config.ref or config.model, config.load).to(self.accelerator.device)
        self.ref.requires_grad_(False)
        value_spec = config.value_model or (config.reward[3:] if config.reward.startswith("rm:") else config.model)
        self.value = without_dropout(load_value_model(value_spec, config.load))
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
        ref_logprobs, _ = policy_token_stats(self.ref, batch, lengths, cfg.temperature)
        old_values = token_values(value, batch, lengths)
        _, mask = response_grid(batch, lengths)
        mask = mask.float()
        scores = scores.to(device)
        rewards, kl = kl_penalised_rewards(old_logprobs, ref_logprobs, scores, mask, cfg.kl_coef)
        advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask)
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
                logprobs, entropy = policy_token_stats(policy, batch, lengths, cfg.temperature, entropy=True)
                values = token_values(value, batch, lengths)
                pg = clipped_policy_loss(logprobs, pick(rollout.old_logprobs), pick(rollout.advantages), mask, cfg.clip_range)
                vf = clipped_value_loss(values, pick(rollout.old_values), pick(rollout.returns), mask, cfg.clip_range_value)
                loss = pg.loss + cfg.vf_coef * vf.loss
                stop_unless_finite(self.accelerator, bool(torch.isfinite(loss.detach())), self.out, step + 1,
                                   "PPO loss", "Lower --lr or raise --kl-coef, then --resume.")
                self.accelerator.backward(loss)
                if cfg.max_grad_norm:  # each model clipped on its own: value gradients cannot shrink the policy's step
                    self.accelerator.clip_grad_norm_(policy_params, cfg.max_grad_norm)
                    self.accelerator.clip_grad_norm_(value_params, cfg.max_grad_norm)
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
        main = acc.is_main_process
        metrics_path = out / "metrics.jsonl"
        optimizer = torch.optim.AdamW(
            [{"params": list(self.policy.parameters()), "lr": cfg.lr},
             {"params": list(self.value.parameters()), "lr": cfg.value_lr or 10 * cfg.lr}],
            eps=1e-5,
        )
        state = open_run(out, cfg.resume, acc, self.policy, {VALUE_FOLDER: self.value})
        start = state.step if state is not None else 0
        policy, value, optimizer = acc.prepare(self.policy, self.value, optimizer)
        if state is not None:
            optimizer.load_state_dict(state.optimizer)
            torch.set_rng_state(state.torch_rng)
            if main:
                truncate_metrics(metrics_path, start)
        if main:
            out.mkdir(parents=True, exist_ok=True)
            write_json({"steps": cfg.steps, "processes": acc.num_processes, "extra": {"task": "ppo"}, **cfg.to_json()},
                       out / "run_config.json")
        acc.wait_for_everyone()
        log = AppendLog(metrics_path) if main else None
        unwrapped_policy, unwrapped_value = acc.unwrap_model(policy), acc.unwrap_model(value)
        self.callbacks.on_start(start, cfg.steps)
        last: dict = {}
        try:
            for step in range(start, cfg.steps):
                began = time.perf_counter()
                rollout = self.rollout(step, unwrapped_policy, unwrapped_value)
                update = self.update(step, rollout, policy, value, optimizer)
                done = step + 1
                self.callbacks.on_step(done)
                if done % cfg.log_every == 0 or done == cfg.steps:
                    record = json_safe(self._record(done, rollout, update, time.perf_counter() - began))
                    if main:
                        log.write(record)
                        self.callbacks.on_log(record)
                    last = record
                if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
                    if main:
                        path = checkpoint.save(
                            out, unwrapped_policy, self.tokenizer,
                            checkpoint.TrainerState(done, optimizer.state_dict(), {}, torch.get_rng_state()),
                            {VALUE_FOLDER: unwrapped_value},
                        )
                        self.callbacks.on_save(done, path)
                    acc.wait_for_everyone()
        finally:
            if log is not None:
                log.close()
        if main:
            save_final(unwrapped_policy, self.tokenizer, out)
            shutil.rmtree(out / VALUE_FOLDER, ignore_errors=True)
            unwrapped_value.save_pretrained(out / VALUE_FOLDER, safe_serialization=True)
            shutil.rmtree(out / checkpoint.LATEST, ignore_errors=True)
            self.callbacks.on_save(cfg.steps, out)
            write_json({"final": last}, out / "summary.json")
        acc.wait_for_everyone()
        gc.collect()
        return RunResult(cfg.steps, out, last)


def train_ppo(config: PPOConfig, callbacks: LoopCallbacks | None = None, on_status=lambda message: None) -> RunResult:
    return PPOTrainer(config, callbacks, on_status).train()
