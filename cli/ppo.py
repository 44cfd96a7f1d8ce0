"""`dpo3d ppo`: RLHF-PPO against a reward model or a rule (the paper's Table 3 comparison with DPO)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from dpo3d.judges.rewards import REWARD_HELP
from dpo3d.training.ppo import PPOConfig, train_ppo
from dpo3d.training.run_folder import NonFiniteLoss

from . import options
from . import training_options as t
from .common import console, fail, user_errors
from .config_file import CONFIG, invocation
from .config_options import with_options
from .datasets import PROMPTS
from .renamed import Renamed, renamed

SHOWN = ("reward", "kl", "entropy", "clip_fraction", "response_length")


#: the loop settings PPO shares with the other trainers (its steps and learning rates are its own)
PPO_LOOP = replace(t.LOOP, only=frozenset({
    "seed", "log_every", "save_every", "resume", "max_grad_norm", "mixed_precision", "gradient_checkpointing",
    "keep_host_memory", "report_to"}))


@user_errors
@renamed(Renamed("--steps", "max_steps", "--max-steps"), Renamed("--gamma", "gae_gamma", "--gae-gamma"))
@with_options(PPO_LOOP, t.LORA)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    prompts: str = PROMPTS,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    reward: str = typer.Option(..., "--reward", "-r", help=f"The sequence reward: {REWARD_HELP}."),
    out: Path = t.OUT,
    model: str = options.MODEL,
    ref: str = typer.Option(None, "--ref", help="Reference policy for the KL penalty (default: the starting --model)."),
    value_model: str = typer.Option(None, "--value-model", help="Start of the value model (default: the reward model for rm:..., else --model)."),
    limit: int = options.LIMIT,
    max_steps: int = options.max_steps(PPOConfig.max_steps, "PPO steps (each: one rollout batch, then --ppo-epochs of updates)."),
    rollout_batch: int = typer.Option(PPOConfig.rollout_batch, "--rollout-batch", min=1, help="Prompts rolled out per process per step."),
    minibatch: int = typer.Option(PPOConfig.minibatch, "--minibatch", min=1, help="Rollouts per optimizer step."),
    ppo_epochs: int = typer.Option(PPOConfig.ppo_epochs, "--ppo-epochs", min=1, help="Passes over each rollout batch."),
    lr: float = typer.Option(PPOConfig.lr, "--lr", help="Policy learning rate (AdamW)."),
    value_lr: float = typer.Option(None, "--value-lr", help="Value-model learning rate (default 10 × --lr: its head starts fresh)."),
    kl_coef: float = typer.Option(PPOConfig.kl_coef, "--kl-coef", min=0.0, help="β of the per-token KL penalty -β·(log π - log π_ref)."),
    gae_gamma: float = typer.Option(PPOConfig.gae_gamma, "--gae-gamma", help="GAE discount γ (train-dpo's --gamma is SimPO's margin)."),
    lam: float = typer.Option(PPOConfig.lam, "--lam", help="GAE λ."),
    clip_range: float = typer.Option(PPOConfig.clip_range, "--clip-range", help="ε of the clipped surrogate: the ratio π/π_old is kept in [1-ε, 1+ε]."),
    clip_range_value: float = typer.Option(PPOConfig.clip_range_value, "--clip-range-value", help="How far a value prediction may move per rollout."),
    vf_coef: float = typer.Option(PPOConfig.vf_coef, "--vf-coef", help="Weight of the value loss."),
    temperature: float = typer.Option(PPOConfig.temperature, "--temperature", min=0.0, help="Sampling temperature (log-probs are taken at the same temperature)."),
    max_new_tokens: int = typer.Option(PPOConfig.max_new_tokens, "--max-new-tokens", min=1, help="Response length cap."),
    missing_eos_penalty: float = typer.Option(None, "--missing-eos-penalty", help="Score given to a response cut at --max-new-tokens (e.g. -1)."),
    plot: bool = t.PLOT,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Optimise a policy with RLHF-PPO: rollouts, a per-token KL penalty to a frozen reference, GAE, clipping.

    Each step samples one response per prompt, scores it with `--reward`, subtracts
    β·(log π - log π_ref) per token, computes GAE advantages (whitened) with a value model,
    then runs `--ppo-epochs` passes of the clipped surrogate and the clipped value loss.
    OUT/metrics.jsonl logs per step: **reward**, **kl** (summed per response), **entropy**,
    **clip_fraction**, **approx_kl**, **value_loss**, **policy_loss**, **response_length**,
    **eos_rate** and an example response. OUT is the final policy (a Hugging Face folder that
    `sample`, `logprobs` and the evaluators load) with the value model in OUT/value.

    Examples:

    `dpo3d ppo --prompts gsm8k:train --limit 64 --reward math --out runs/ppo-math --max-steps 10`

    `dpo3d ppo --prompts gsm8k:train --reward rm:runs/rm --out runs/ppo-rm --lr 1e-6 --kl-coef 0.05`

    Many GPUs: `accelerate launch --num_processes 8 -m dpo3d ppo ...` (each process rolls out its own prompts;
    advantages are whitened over all processes' rollouts).
    """
    loop = PPO_LOOP.values(ctx.params)
    loop["max_grad_norm"] = loop["max_grad_norm"] or None
    config = PPOConfig(
        model=model, prompts=options.data_spec(prompts, subset, columns), out=out, reward=reward, ref=ref, value_model=value_model, limit=limit,
        max_steps=max_steps, rollout_batch=rollout_batch, minibatch=minibatch, ppo_epochs=ppo_epochs, lr=lr, value_lr=value_lr,
        kl_coef=kl_coef, gae_gamma=gae_gamma, lam=lam, clip_range=clip_range, clip_range_value=clip_range_value,
        vf_coef=vf_coef, temperature=temperature, max_new_tokens=max_new_tokens,
        missing_eos_penalty=missing_eos_penalty, **loop, cpu=t.on_cpu(device),
        load=options.load_options(dtype, trust_remote_code), lora=t.lora_config(ctx.params), invocation=invocation(ctx),
    )
    display = t.LiveDisplay(SHOWN)
    try:
        with display.progress:
            result = train_ppo(config, display.callbacks(), lambda m: display.say(m, "dim"))
    except NonFiniteLoss as err:
        fail(str(err), code=1)
    last = result.last_record
    if plot:
        from dpo3d.training.plots import plot_panels

        console.print(f"curves → {plot_panels(out, 'ppo')}")
    console.print(f"[green]done[/]: {result.steps} steps → {out} (last reward {last.get('reward', float('nan')):.3f}, "
                  f"KL {last.get('kl', float('nan')):.3f})")
