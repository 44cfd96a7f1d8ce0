"""`dpo3d sft`: supervised fine-tuning on response tokens."""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.training.loop import NonFiniteLoss
from dpo3d.training.sft import SFTRunConfig, train_sft

from . import options
from . import training_options as t
from .common import console, fail, user_errors


@user_errors
def command(
    data: str = typer.Option(..., "--data", "-d", help="JSONL of prompt+completion, pairs (chosen is the target), records with a reference, or a built-in dataset such as math:train (its worked solutions)."),
    out: Path = t.OUT,
    model: str = options.MODEL,
    eval_data: str = typer.Option(None, "--eval-data", help="Held-out data in the same forms; its loss is logged."),
    eval_every: int = typer.Option(10, "--eval-every", min=0, help="Evaluate every N steps."),
    limit: int = typer.Option(None, "--limit", help="Use only the first N records."),
    max_length: int = options.MAX_LENGTH,
    lr: float = typer.Option(1e-5, "--lr", help="Peak learning rate (AdamW)."),
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
    dtype: str = options.DTYPE,
    device: str = t.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Fine-tune a model on (prompt, response) examples; the loss covers response tokens only.

    Writes OUT as a Hugging Face model folder with the tokenizer, run_config.json and
    metrics.jsonl; `dpo3d train-dpo --model OUT` starts from it.

    Example: `dpo3d sft --data math:train --limit 500 --out runs/sft --max-steps 50`
    """
    loop = t.loop_config(out, lr, batch_size, grad_accum, epochs, max_steps, warmup_ratio, schedule, seed,
                         log_every, save_every, resume, max_grad_norm, device)
    config = SFTRunConfig(model=model, data=data, loop=loop, eval_data=eval_data, eval_every=eval_every,
                          max_length=max_length, limit=limit, load=options.load_options(dtype, trust_remote_code))
    display = t.LiveDisplay(("loss", "eval_loss"))
    try:
        with display.progress:
            result = train_sft(config, display.callbacks(), lambda m: display.progress.console.print(f"[dim]{m}[/]"))
    except NonFiniteLoss as err:
        fail(str(err), code=1)
    console.print(f"[green]done[/]: {result.steps} steps → {out}")
