"""`dpo3d ppo`: RLHF-PPO against a reward model or a rule (the paper's Table 3 comparison with DPO)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from dpo3d.judges.rewards import REWARD_HELP
from dpo3d.training.ppo import LOOP_DEFAULTS, LOOP_FIELDS, LOOP_HELP, PPOConfig, train_ppo

from . import options
from . import training_options as t
from .common import console
from .config_file import CONFIG, invocation
from .config_options import OptionGroup, with_options
from .datasets import PROMPTS
from .renamed import Renamed, renamed

SHOWN = ("reward", "kl", "entropy", "clip_fraction", "response_length")


#: the loop settings PPO shares with the other trainers, with PPO's defaults and meanings where they differ
PPO_LOOP = replace(t.LOOP, only=LOOP_FIELDS, defaults=LOOP_DEFAULTS, helps=LOOP_HELP)
#: PPO's own settings (PPOConfig's fields: --rollout-batch, --minibatch, --ppo-epochs, --kl-coef, ...)
PPO = OptionGroup(PPOConfig)


@renamed(Renamed("--steps", "max_steps", "--max-steps"), Renamed("--gamma", "gae_gamma", "--gae-gamma"))
@with_options(PPO_LOOP, PPO, t.LORA)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    prompts: str = PROMPTS,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    reward: str = typer.Option(..., "--reward", "-r", help=f"The sequence reward: {REWARD_HELP}."),
    out: Path = t.OUT,
    model: str = options.MODEL,
    limit: int = options.LIMIT,
    plot: bool = t.PLOT,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
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
    config = PPO.build(
        ctx.params, model=model, prompts=options.data_spec(prompts, subset, columns), reward=reward, limit=limit,
        loop=t.loop_config(ctx.params, invocation(ctx), group=PPO_LOOP),
        load=options.load_options(dtype, trust_remote_code, allow_pickle=allow_pickle), lora=t.lora_config(ctx.params),
    )
    display = t.LiveDisplay(SHOWN)
    with t.running(display):
        result = train_ppo(config, display.callbacks(), lambda m: display.say(m, "dim"))
    last = result.last_record
    if plot:
        from dpo3d.training.plots import plot_panels

        console.print(f"curves → {plot_panels(out, 'ppo')}")
    console.print(f"[green]done[/]: {result.steps} steps → {out} (last reward {last.get('reward', float('nan')):.3f}, "
                  f"KL {last.get('kl', float('nan')):.3f})")
