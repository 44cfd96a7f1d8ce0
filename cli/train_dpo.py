"""`dpo3d train-dpo`: preference training with any registered loss, the 3D-properties measured live."""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.losses import LOSSES, get_loss, parse_loss_args
from dpo3d.scoring.logprobs import LogprobOptions
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.training.loop import NonFiniteLoss
from dpo3d.watch.guard import KEEP_BEST, POLICIES, GuardSettings
from dpo3d.watch.probe_responses import ProbeResponseConfig

from . import options
from . import training_options as t
from .common import console, fail, user_errors
from .config_file import CONFIG, invocation
from .renamed import renamed

LOSS_HELP = (
    "Loss from the registry: " + ", ".join(sorted(LOSSES)) + "; or a weighted mixture such as dpo:0.8,bco:0.2,sft:1.0. "
    "`dpo3d train-dpo --list-losses` shows their formulas and options."
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


def _list_losses() -> None:
    from .loss_listing import print_losses

    print_losses(console)


def _list_losses_now(value: bool) -> None:
    """--list-losses is eager: it prints and exits before any other option is checked (no --out needed)."""
    if value:
        _list_losses()
        raise typer.Exit()


@user_errors
@renamed(options.PAIRS_P)
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
    beta: float = typer.Option(None, "--beta", help="β (IPO: τ). Default: the loss's own (0.1 for dpo)."),
    beta_chosen: float = typer.Option(None, "--beta-chosen", help="flex: β_w on the chosen log-ratio."),
    beta_rejected: float = typer.Option(None, "--beta-rejected", help="flex: β_l on the rejected log-ratio (β_l < β_w weighs the rejected side less; see docs/toy.md for what it does)."),
    sft_weight: float = typer.Option(None, "--sft-weight", help="dpo-sft: α on the chosen NLL; slic: λ."),
    label_smoothing: float = typer.Option(None, "--label-smoothing", help="cdpo/robust/exo: ε."),
    gamma: float = typer.Option(None, "--gamma", help="simpo: target margin γ."),
    dpop_lambda: float = typer.Option(None, "--dpop-lambda", help="dpop: λ."),
    delta: float = typer.Option(None, "--delta", help="slic: calibration margin δ."),
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
    lr: float = t.LR,
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
    loss_args: list[str] = typer.Option(None, "--loss-arg", help="A loss option as name=value (repeatable), e.g. --loss-arg beta_rejected=0.02; in a mixture, part.name=value sets one part. `--list-losses` shows every loss's options and defaults."),
    list_losses: bool = typer.Option(False, "--list-losses", is_eager=True, callback=_list_losses_now, help="Print the loss registry (formulas, options, defaults, sources) and exit."),
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

    Example: `dpo3d train-dpo --pairs pairs.jsonl --loss ipo --beta 0.1 --out runs/ipo --plot`

    Many GPUs: accelerate launch --num_processes 8 -m dpo3d train-dpo ...
    """
    if list_losses:
        _list_losses()
        return
    options.required(pairs, "--pairs")
    loop = t.loop_config(ctx.params, invocation(ctx))
    hyper = {"beta": beta, "beta_chosen": beta_chosen, "beta_rejected": beta_rejected, "sft_weight": sft_weight,
             "label_smoothing": label_smoothing, "gamma": gamma, "dpop_lambda": dpop_lambda, "delta": delta}
    spec = get_loss(loss)  # an unknown loss or a bad mixture is one line
    hyper.update(parse_loss_args(spec, loss_args or []))
    if loss in LOSSES:
        ignored = [k for k, v in hyper.items() if v is not None and k not in LOSSES[loss].defaults]
        if ignored:
            console.print(f"[yellow]note:[/] --loss {loss} does not use {', '.join('--' + k.replace('_', '-') for k in ignored)}")
    config = DPORunConfig(
        model=model, pairs=options.data_spec(pairs, subset, columns), limit=limit, loop=loop, loss=loss, hyperparameters=hyper, ref=ref,
        eval_pairs=options.data_spec(eval_pairs, subset, columns) if eval_pairs else None,
        max_length=max_length, probe_size=probe_size, unseen_limit=unseen_limit, grad_split_every=grad_split_every,
        eval_every=eval_every, load=options.load_options(dtype, trust_remote_code),
        lora=t.lora_config(lora_r, lora_alpha, lora_dropout, lora_targets, merge),
        probe_responses=ProbeResponseConfig(greedy=probe_greedy, samples=probe_samples, temperature=probe_temperature,
                                            max_new_tokens=probe_new_tokens),
        logprobs=LogprobOptions(head_chunk=head_chunk or None, packing=packing),
        guard=guard, keep_best=keep_best,
    )
    display = t.LiveDisplay(SHOWN)
    try:
        with display.progress:
            status = lambda message: display.progress.console.print(f"[dim]{message}[/]")  # noqa: E731
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
