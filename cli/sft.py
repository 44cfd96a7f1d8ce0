"""`dpo3d sft`: supervised fine-tuning on response tokens."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from dpo3d.training.sft import SFT_LR, SFTRunConfig, train_sft

from . import options
from . import training_options as t
from .common import console
from .config_file import CONFIG, invocation
from .config_options import OptionGroup, with_options


@with_options(replace(t.LOOP, defaults={"lr": SFT_LR}), OptionGroup(SFTRunConfig), t.LORA)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    data: str = typer.Option(..., "--data", "-d", help=f"Prompt+completion, `messages` conversations (the final assistant turn is the target, earlier turns the prompt), pairs (chosen is the target), records with a reference, or a built-in dataset such as math:train (its worked solutions); from {options.SOURCE_HELP}."),
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    out: Path = t.OUT,
    model: str = options.MODEL,
    eval_data: str = typer.Option(None, "--eval-data", help="Held-out data in the same forms; its loss is logged."),
    limit: int = options.LIMIT,
    max_length: int = options.MAX_LENGTH,
    plot: bool = t.PLOT,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """Fine-tune a model on (prompt, response) examples; the loss covers response tokens only.

    Writes OUT as a Hugging Face model folder with the tokenizer, run_config.json and
    metrics.jsonl; `dpo3d train-dpo --model OUT` starts from it.

    Example: `dpo3d sft --data math:train --limit 500 --out runs/sft --max-steps 50`
    """
    loop = t.loop_config(ctx.params, invocation(ctx))
    config = OptionGroup(SFTRunConfig).build(
        ctx.params, model=model, data=options.data_spec(data, subset, columns), loop=loop,
        eval_data=options.data_spec(eval_data, subset, columns) if eval_data else None, max_length=max_length, limit=limit, load=options.load_options(dtype, trust_remote_code, allow_pickle=allow_pickle),
                          lora=t.lora_config(ctx.params))
    display = t.LiveDisplay(("loss", "eval_loss"))
    with t.running(display):
        result = train_sft(config, display.callbacks(), lambda m: display.say(m, "dim"))
    console.print(f"[green]done[/]: {result.steps} steps → {out}")
    if plot:
        from dpo3d.training.plots import plot_panels

        console.print(f"curves → {plot_panels(out, 'sft')}")
