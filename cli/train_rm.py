"""`dpo3d train-rm`: a Bradley-Terry reward model on preference pairs (the paper's steadier contrast to DPO)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from dpo3d.training.rm import RM_LR, RMRunConfig, train_rm

from . import options
from . import training_options as t
from .common import console
from .config_file import CONFIG, invocation
from .config_options import OptionGroup, with_options
from .renamed import renamed


@renamed(options.PAIRS_P)
@with_options(replace(t.LOOP, defaults={"lr": RM_LR}), OptionGroup(RMRunConfig), t.LORA)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    pairs: str = options.PAIRS,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    limit: int = options.LIMIT,
    out: Path = t.OUT,
    model: str = options.MODEL,
    eval_pairs: str = typer.Option(None, "--eval-pairs", help="Held-out pairs (any source, same --columns/--subset): preference accuracy, loss and margin logged."),
    max_length: int = options.MAX_LENGTH,
    plot: bool = t.PLOT,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """Train a reward model r(x, y) with the Bradley-Terry loss -log σ(r_w - r_l).

    A scalar head on the causal LM (`--model`), read at the response's last token. Every
    logged step writes to OUT/metrics.jsonl the loss, accuracy, margin, both rewards and the
    loss's gradient on each reward (**reward_grad_chosen = -reward_grad_rejected**: the
    symmetry DPO lacks, where the rejected side's gradient runs away); with `--eval-pairs`,
    the held-out accuracy. OUT is a Hugging Face sequence-classification folder that
    `dpo3d judge rm --rm OUT` and `dpo3d ppo --reward rm:OUT` load.

    Compare with DPO on the same held-out pairs (the paper's Figure 4): run `train-dpo`
    with the same `--eval-pairs`, then `dpo3d compare runs/rm runs/dpo -o fig4.png`.

    Example: `dpo3d train-rm --pairs pairs.jsonl --eval-pairs heldout.jsonl --out runs/rm --max-steps 50`
    """
    options.required(pairs, "--pairs")
    loop = t.loop_config(ctx.params, invocation(ctx))
    config = OptionGroup(RMRunConfig).build(
        ctx.params, model=model, pairs=options.data_spec(pairs, subset, columns), limit=limit, loop=loop,
        eval_pairs=options.data_spec(eval_pairs, subset, columns) if eval_pairs else None, max_length=max_length, load=options.load_options(dtype, trust_remote_code, allow_pickle=allow_pickle),
                         lora=t.lora_config(ctx.params))
    display = t.LiveDisplay(("loss", "accuracy", "margin", "eval_accuracy"))
    with t.running(display):
        result = train_rm(config, display.callbacks(), lambda m: display.say(m, "dim"))
    last = result.last_record
    shown = ", ".join(f"{k} {last[k]:.3f}" for k in ("accuracy", "eval_accuracy") if isinstance(last.get(k), float))
    console.print(f"[green]done[/]: {result.steps} steps → {out}" + (f" ({shown})" if shown else ""))
    if plot:
        from dpo3d.training.plots import plot_panels

        console.print(f"curves → {plot_panels(out, 'rm')}")
