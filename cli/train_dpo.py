"""`dpo3d train-dpo`: preference training with any registered loss, the 3D-properties measured live."""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.losses import LOSSES
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.run_folder import NonFiniteLoss
from dpo3d.watch.guard import KEEP_BEST, POLICIES, GuardSettings
from dpo3d.watch.probe_responses import ProbeResponseConfig

from . import loss_options as lo
from . import options
from . import training_options as t
from .common import console, fail, user_errors
from .config_file import CONFIG, invocation
from .config_options import with_options
from .renamed import renamed

LOSS_HELP = (
    "Loss from the registry: " + ", ".join(sorted(LOSSES)) + "; or a weighted mixture such as dpo:0.8,bco:0.2,sft:1.0. "
    "Options: --loss-arg KEY=VALUE; `dpo3d train-dpo --list-losses` shows each loss's formula, options and defaults."
)
_GUARD = GuardSettings()  # the guard's defaults, for the help text
GUARD_HELP = (
    f"Act on the live 3D detector's warnings, as the paper's Proposition 1 suggests: {' | '.join(POLICIES)}. "
    f"sft adds α·NLL(chosen) (α = {_GUARD.sft_weight}, ×{_GUARD.sft_factor:g} on each later warning, at most "
    f"{_GUARD.sft_cap:g}; dpo-sft/slic raise their own α); flex turns dpo into flex-β and multiplies β_l by "
    f"{_GUARD.beta_rejected_factor:g} per warning (never below {_GUARD.beta_rejected_floor:g}·β_w); stop ends the run on "
    f"{' or '.join(p.replace('_', ' ') for p in _GUARD.stop_on)} and leaves in OUT the model of the step where the probe "
    "chosen log-prob peaked. A change applies from the next step. Every action goes to metrics.jsonl (guard_actions), "
    "summary.json, stderr and the --plot figure. Default: the detector only warns."
)
KEEP_BEST_HELP = (
    f"Keep OUT/best: the model of the logged step where the probe's {' / '.join(KEEP_BEST)} log-prob peaked "
    "(saved each time it rises; OUT/best/best.json gives the step). Implied by --guard stop."
)
SHOWN = ("loss", "accuracy", "margin", "probe_chosen_logp_delta", "probe_rejected_logp_delta", "probe_unseen_logp_delta")


@user_errors
@renamed(options.PAIRS_P)
@with_options(t.LOOP, t.LORA)
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    pairs: str = options.PAIRS,
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    limit: int = options.LIMIT,
    out: Path = t.OUT,
    model: str = options.MODEL,
    ref: str = typer.Option(None, "--ref", help="Reference model (default: the same start as --model)."),
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
    eval_every: int = typer.Option(DPORunConfig.eval_every, "--eval-every", min=0, help="Evaluate the held-out pairs every N steps."),
    probe_size: int = typer.Option(DPORunConfig.probe_size, "--probe-size", min=1, help="Fixed training pairs whose log-probs are tracked each logged step."),
    unseen_limit: int = typer.Option(DPORunConfig.unseen_limit, "--unseen", min=0, help="Unseen candidates (the pairs' `unseen` field) tracked for dispersion."),
    probe_greedy: bool = typer.Option(ProbeResponseConfig.greedy, "--probe-greedy/--no-probe-greedy", help="Squeezing probe: before training, the starting policy's greedy response to each probe prompt; its log-prob change (probe_greedy_logp_delta) and per-token entropy are logged (Ren & Sutherland 2025: DPO's negative gradient squeezes mass onto the most likely response)."),
    probe_samples: int = typer.Option(ProbeResponseConfig.samples, "--probe-samples", min=0, help="Squeezing probe: responses sampled from the starting policy per probe prompt (probe_samples_logp_delta); 0: none."),
    probe_temperature: float = typer.Option(ProbeResponseConfig.temperature, "--probe-temperature", min=0.01, help="Temperature of the --probe-samples."),
    probe_new_tokens: int = typer.Option(ProbeResponseConfig.max_new_tokens, "--probe-new-tokens", min=1, help="Longest greedy/sampled probe response, in tokens."),
    guard: str = typer.Option(None, "--guard", help=GUARD_HELP),
    keep_best: str = typer.Option(None, "--keep-best", help=KEEP_BEST_HELP),
    grad_split_every: int = typer.Option(DPORunConfig.grad_split_every, "--grad-split-every", min=0, help="Every N steps, measure the parameter-gradient norm from the chosen and the rejected side (2 extra backward passes)."),
    head_chunk: int = typer.Option(LogprobOptions.head_chunk or 0, "--head-chunk", min=0, help=f"Positions per pass through the LM head: the logits are recomputed in backward, so memory grows with N x vocabulary, not tokens x vocabulary (default {LogprobOptions.head_chunk}); 0: the model's full logits."),
    packing: bool = typer.Option(LogprobOptions.packing, "--packing/--no-packing", help="Pack the batch's sequences into rows without padding (position ids restart per sequence); a model that does not honour it is padded."),
    max_length: int = options.MAX_LENGTH,
    plot: bool = t.PLOT,
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
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
    config = DPORunConfig(
        model=model, pairs=options.data_spec(pairs, subset, columns), limit=limit, loop=loop, loss=bound, ref=ref,
        eval_pairs=options.data_spec(eval_pairs, subset, columns) if eval_pairs else None,
        max_length=max_length, probe_size=probe_size, unseen_limit=unseen_limit, grad_split_every=grad_split_every,
        eval_every=eval_every, load=options.load_options(dtype, trust_remote_code),
        lora=t.lora_config(ctx.params),
        probe_responses=ProbeResponseConfig(greedy=probe_greedy, samples=probe_samples, temperature=probe_temperature,
                                            max_new_tokens=probe_new_tokens),
        logprobs=LogprobOptions(head_chunk=head_chunk or None, packing=packing),
        guard=guard, keep_best=keep_best,
    )
    display = t.LiveDisplay(SHOWN)
    try:
        with display.progress:
            status = lambda message: display.say(message, "dim")  # noqa: E731
            result = train_dpo(config, display.callbacks(), status)
    except NonFiniteLoss as err:
        fail(str(err), code=1)
    stopped = f" (the guard stopped it; OUT holds the model of step {_best_step(out)})" if result.stopped_at else ""
    console.print(f"[green]done[/]: {result.steps} steps → {out} (metrics.jsonl, summary.json){stopped}")
    if plot:
        from dpo3d.training.plots import plot_run

        console.print(f"curves → {plot_run(out)}")


def _best_step(out: Path) -> int | None:
    from dpo3d.training.control import saved_best_step

    return saved_best_step(out)
