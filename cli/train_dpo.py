"""`dpo3d train-dpo`: preference training with any registered loss, the 3D-properties measured live."""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.losses import LOSSES
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.watch.probe_responses import ProbeResponseConfig

from . import loss_options as lo
from . import options
from . import training_options as t
from .common import console
from .config_file import CONFIG, invocation
from .config_options import OptionGroup, with_options
from .renamed import renamed

LOSS_HELP = (
    "Loss from the registry: " + ", ".join(sorted(LOSSES)) + "; or a weighted mixture such as dpo:0.8,bco:0.2,sft:1.0. "
    "Options: --loss-arg KEY=VALUE; `dpo3d train-dpo --list-losses` shows each loss's formula, options and defaults."
)
#: train-dpo's own settings (DPORunConfig's: --ref, --probe-size, --unseen, --guard, ...), the squeezing
#: probes' (ProbeResponseConfig: --probe-greedy, --probe-samples, ...) and the scoring path's (--head-chunk, --packing)
DPO = OptionGroup(DPORunConfig)
PROBE_RESPONSES = OptionGroup(ProbeResponseConfig, prefix="probe_")
LOGPROBS = OptionGroup(LogprobOptions)
SHOWN = ("loss", "accuracy", "margin", "probe_chosen_logp_delta", "probe_rejected_logp_delta", "probe_unseen_logp_delta")


@renamed(options.PAIRS_P)
@with_options(t.LOOP, DPO, PROBE_RESPONSES, LOGPROBS, t.LORA)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    pairs: str = options.PAIRS,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    limit: int = options.LIMIT,
    out: Path = t.OUT,
    model: str = options.MODEL,
    loss: str = typer.Option("dpo", "--loss", "-l", help=LOSS_HELP),
    loss_args: list[str] = lo.LOSS_ARG,
    beta: float = lo.BETA,  # the deprecated per-loss flags (hidden): --loss-arg KEY=VALUE
    beta_chosen: float = lo.BETA_CHOSEN,
    beta_rejected: float = lo.BETA_REJECTED,
    sft_weight: float = lo.SFT_WEIGHT,
    label_smoothing: float = lo.LABEL_SMOOTHING,
    gamma: float = lo.GAMMA,
    dpop_lambda: float = lo.DPOP_LAMBDA,
    delta: float = lo.DELTA,
    list_losses: bool = lo.LIST_LOSSES,
    eval_pairs: str = typer.Option(None, "--eval-pairs", help="Held-out pairs (any source, same --columns/--subset): loss, implicit-reward accuracy and margin logged."),
    max_length: int = options.MAX_LENGTH,
    plot: bool = t.PLOT,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """Train a policy on preference pairs with DPO or a variant, watching for the 3D-properties.

    Every logged step writes to OUT/metrics.jsonl: the loss; chosen/rejected log-probs of the batch
    (sum and per token) and their change from the reference; implicit rewards, margin, accuracy;
    log|∂L/∂x1| and log|∂L/∂x2| from the loss registry; and, on a fixed probe set, the chosen,
    rejected and unseen log-probs and their change since step 0 (summed and per token), beside the
    starting policy's own greedy response and samples for the probe prompts (where the squeezed mass
    goes), and the next-token split where each probe pair first differs (p of the chosen's token, the
    rejected's, every other: token-level dispersion). A live detector warns when the run shows a
    drastic drop, likelihood displacement, degradation or dispersion, never for changes inside the
    rounding noise measured at step 0; `dpo3d diagnose` reads a finished run again.

    Defaults follow the paper (App. D.1) where they fit a small model: AdamW, β = 0.1, one
    epoch, 2 accumulation steps; the learning rate is 1e-6 (the paper's 5e-7 was for 13-33B models).

    Example: `dpo3d train-dpo --pairs pairs.jsonl --loss ipo --loss-arg beta=0.1 --out runs/ipo --plot`

    Many GPUs: accelerate launch --num_processes 8 -m dpo3d train-dpo ...
    """
    options.required(pairs, "--pairs")
    # the loss, bound once (an unknown loss, a bad mixture or option is one line); the run records --loss-arg
    (bound,) = lo.bind_cli_losses(ctx.params, [loss])
    loop = t.loop_config(ctx.params, invocation(ctx))
    config = DPO.build(
        ctx.params, model=model, pairs=options.data_spec(pairs, subset, columns), limit=limit, loop=loop, loss=bound,
        eval_pairs=options.data_spec(eval_pairs, subset, columns) if eval_pairs else None, max_length=max_length,
        load=options.load_options(dtype, trust_remote_code, allow_pickle=allow_pickle), lora=t.lora_config(ctx.params),
        probe_pairs=options.data_spec(ctx.params["probe_pairs"], subset, columns) if ctx.params["probe_pairs"] else None,
        probe_responses=PROBE_RESPONSES.build(ctx.params), logprobs=LOGPROBS.build(ctx.params),
    )
    display = t.LiveDisplay(SHOWN)
    with t.running(display):
        result = train_dpo(config, display.callbacks(), lambda message: display.say(message, "dim"))
    stopped = f" (the guard stopped it; OUT holds the model of step {_best_step(out)})" if result.stopped_at else ""
    console.print(f"[green]done[/]: {result.steps} steps → {out} (metrics.jsonl, summary.json){stopped}")
    if plot:
        from dpo3d.training.plots import plot_run

        console.print(f"curves → {plot_run(out)}")


def _best_step(out: Path) -> int | None:
    from dpo3d.training.control import saved_best_step

    return saved_best_step(out)
