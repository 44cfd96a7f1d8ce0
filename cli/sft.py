"""`dpo3d sft`: supervised fine-tuning on response tokens."""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.training.loop import NonFiniteLoss
from dpo3d.training.sft import SFT_LR, SFTRunConfig, train_sft

from . import options
from . import training_options as t
from .common import console, fail, user_errors
from .config_file import CONFIG, invocation


@user_errors
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    data: str = typer.Option(..., "--data", "-d", help=f"Prompt+completion, `messages` conversations (the final assistant turn is the target, earlier turns the prompt), pairs (chosen is the target), records with a reference, or a built-in dataset such as math:train (its worked solutions); from {options.SOURCE_HELP}."),
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    out: Path = t.OUT,
    model: str = options.MODEL,
    eval_data: str = typer.Option(None, "--eval-data", help="Held-out data in the same forms; its loss is logged."),
    eval_every: int = typer.Option(SFTRunConfig.eval_every, "--eval-every", min=0, help="Evaluate every N steps."),
    limit: int = options.LIMIT,
    max_length: int = options.MAX_LENGTH,
    lr: float = t.with_default(t.LR, SFT_LR),
    batch_size: int = t.BATCH_SIZE,
    grad_accum: int = t.GRAD_ACCUM,
    epochs: float = t.EPOCHS,
    max_steps: int = t.MAX_STEPS,
    warmup_ratio: float = t.WARMUP,
    schedule: str = t.SCHEDULE,
    seed: int = t.SEED,
    log_every: int = t.LOG_EVERY,
    save_every: int = t.SAVE_EVERY,
    resume: bool = t.RESUME,
    max_grad_norm: float = t.MAX_GRAD_NORM,
    lora_r: int = t.LORA_R,
    lora_alpha: float = t.LORA_ALPHA,
    lora_dropout: float = t.LORA_DROPOUT,
    lora_targets: str = t.LORA_TARGETS,
    merge: bool = t.MERGE,
    plot: bool = t.PLOT,
    mixed_precision: str = t.MIXED_PRECISION,
    gradient_checkpointing: bool = t.GRADIENT_CHECKPOINTING,
    keep_host_memory: bool = t.KEEP_HOST_MEMORY,
    report_to: str = t.REPORT_TO,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Fine-tune a model on (prompt, response) examples; the loss covers response tokens only.

    Writes OUT as a Hugging Face model folder with the tokenizer, run_config.json and
    metrics.jsonl; `dpo3d train-dpo --model OUT` starts from it.

    Example: `dpo3d sft --data math:train --limit 500 --out runs/sft --max-steps 50`
    """
    loop = t.loop_config(ctx.params, invocation(ctx))
    config = SFTRunConfig(model=model, data=options.data_spec(data, subset, columns), loop=loop,
                          eval_data=options.data_spec(eval_data, subset, columns) if eval_data else None, eval_every=eval_every,
                          max_length=max_length, limit=limit, load=options.load_options(dtype, trust_remote_code),
                          lora=t.lora_config(lora_r, lora_alpha, lora_dropout, lora_targets, merge))
    display = t.LiveDisplay(("loss", "eval_loss"))
    try:
        with display.progress:
            result = train_sft(config, display.callbacks(), lambda m: display.progress.console.print(f"[dim]{m}[/]"))
    except NonFiniteLoss as err:
        fail(str(err), code=1)
    console.print(f"[green]done[/]: {result.steps} steps → {out}")
    if plot:
        from dpo3d.training.plots import plot_panels

        console.print(f"curves → {plot_panels(out, 'sft')}")
