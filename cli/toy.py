"""`dpo3d toy`: the paper's toy model (§3.2, App. D), where DPO's 3D-properties can be watched step by step."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from dpo3d.losses import LOSSES, bind_loss
from dpo3d.toy.ablation import DEFAULT_SGD_LR, DEFAULT_TABULAR_LR
from dpo3d.toy.indicators import TABLE_COLUMNS, indicators
from dpo3d.toy.outputs import write_outputs
from dpo3d.toy.parallel import run_toy_parallel
from dpo3d.toy.scenarios import (
    OFF_POLICY_CHOSEN,
    OFF_POLICY_REJECTED,
    ON_POLICY_CHOSEN,
    ON_POLICY_REJECTED,
    REJECTED_DRAWS,
    UNSEEN_PROBABILITY,
    load_distribution,
    select_scenarios,
)
from dpo3d.toy.seeds import DEFAULT_SWEEP_SEEDS, seed_list
from dpo3d.toy.train import DEFAULT_LR, DEFAULT_STEPS, ToyConfig, run_toy
from dpo3d.watch.guard import KEEP_BEST, POLICIES, GuardSettings

from . import loss_options as lo
from . import options
from .common import UsageError, console, progress
from .config_file import CONFIG
from .renamed import Renamed, renamed

DEFAULT_SWEEP_LOSSES = "dpo,flex,dpo-sft,ipo"
_GUARD = GuardSettings()  # the guard's defaults, for the help text

HELP = (
    "Train the paper's toy model with any loss and watch DPO's 3D-properties happen.\n\n"
    "4 prompts, 10 responses: 1–4 chosen (response i is optimal for prompt i), 5–8 rejected, 9–10 unseen "
    "(in no pair). The policy is a three-layer MLP (one-hot prompt → hidden → hidden → 10 logits). "
    "**Step 1** trains it towards a hand-set distribution (the SFT stand-in) and freezes that model as "
    "the reference. **Step 2** trains a copy on the pairs (prompt i, response i, a rejected drawn from 5–8) "
    "with --loss, full batch, Adam.\n\n"
    "**Scenarios** (App. C, Table 4) set the step-1 probability of each class, for every prompt: chosen "
    f"on-policy {ON_POLICY_CHOSEN:g} / off-policy {OFF_POLICY_CHOSEN:g}; each rejected on-policy "
    f"{ON_POLICY_REJECTED:g} / off-policy {OFF_POLICY_REJECTED:g}; each unseen {UNSEEN_PROBABILITY:g}; the other "
    "prompts' chosen share the rest. 1 = both on-policy, 2 = chosen off, 3 = rejected off, 4 = both off.\n\n"
    "**Writes to --out**: metrics.jsonl (every run, every step: the 40 probabilities; per pair x1, x2, "
    "log|∂L/∂x1|, log|∂L/∂x2| from the registry and the autograd-measured ∂L/∂x1, ∂L/∂x2; the loss), "
    "summary.json (the 3D indicators per run), likelihoods.png (Figure 2), scenarios.png (Figure 3), "
    "gradients.png, landscape.png (the loss over (x1, x2) with its gradient field) and, with --sweep, "
    "sweep.png and sweep.md. The table of indicators goes to stderr.\n\n"
    f"**Seeds**: --sweep runs {DEFAULT_SWEEP_SEEDS} seeds by default (--seeds N: N seeds from --seed; a seed sets the "
    "MLP's init and the rejected drawn for each pair), other runs one. With several seeds each seed's "
    "metrics.jsonl and summary.json go to seed-<k>/, and seeds.json, sweep.md and sweep.png report every number "
    "as mean ± sd over the seeds (sample sd, n − 1; the figure: mean line, ±sd band). `--seeds 1` gives the "
    "one-seed files above.\n\n"
    "**Reading it**: each prompt's probability mass is split into four shares that sum to 1: its own chosen "
    "(green), the rejected 5–8 (orange; the pair's own rejected x2 dotted), the other prompts' chosen responses "
    "(grey dashed) and the unseen 9–10 (purple). Only mass gained by the unseen 9–10 is dispersion (Corollary 3: "
    "mass on responses in no pair); the other prompts' chosen are in the data, so mass moving there is not "
    "dispersion. In this toy the unseen 9–10 fall to ~1e-20 with the rejected, and what the chosen loses after "
    "its peak goes to the other prompts' chosen. A green curve that peaks (dot) and then sinks while the margin "
    "grows is degradation.\n\n"
    "**--ablation** trains DPO in four set-ups over the seeds (5 by default): the default (shared MLP, Adam), "
    "one prompt's pair alone, a logit table with no weights shared between prompts, and plain SGD; it writes "
    "ablation.md, ablation.json and ablation.png with the chosen's peak → final and post-peak fall (mean ± sd) "
    "and log10 x2 and log10 |∂L/∂x1| (the Corollary-2 check), to show what drives the toy's degradation.\n\n"
    "**Acting on it** (--guard): each step's probes (the chosen, rejected and unseen log-probs' change since "
    "step 0) go to train-dpo's live 3D detector, and a guard acts on its warnings, as Proposition 1 suggests. "
    f"`sft` adds an SFT term α·(−log π(chosen)) to the loss (α = {_GUARD.sft_weight:g}; each later warning "
    f"×{_GUARD.sft_factor:g}, at most {_GUARD.sft_cap:g}); `flex` lowers β_l (dpo becomes flex; each warning "
    f"×{_GUARD.beta_rejected_factor:g}, not below {_GUARD.beta_rejected_floor:g}·β_w); `stop` freezes the run on "
    f"{' or '.join(name.replace('_', ' ') for name in _GUARD.stop_on)} and keeps the step where the probe chosen log-prob peaked (as --keep-best "
    "chosen does without a guard). Actions go to metrics.jsonl, summary.json, stderr and the figures "
    "(magenta lines; the kept step black dotted).\n\n"
    "Examples:\n\n"
    "- `dpo3d toy --sweep --out runs/toy` (5 seeds)\n"
    "- `dpo3d toy --sweep --seeds 1 --seed 3 --out runs/toy-seed3`\n"
    "- `dpo3d toy --ablation --out runs/toy-ablation`\n"
    "- `dpo3d toy --scenario 1 --loss flex --loss-arg beta_chosen=0.1 --loss-arg beta_rejected=0.02`\n"
    "- `dpo3d toy --init-dist my_init.json --loss dpo-sft --loss-arg sft_weight=0.5`\n"
    "- `dpo3d toy --list-losses` (every loss with its options and their defaults)\n"
    "- `dpo3d toy --guard sft --out runs/toy-guard`\n\n"
    f"{lo.ALIASES_NOTE}"
)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _guard_cell(row: dict) -> str:
    """How many actions the guard took, and the step kept (a stop's, or --keep-best's)."""
    acted = len(row["guard_actions"])
    kept = f" kept@{row['kept_step']}={row['kept_chosen']:.2f}" if row["kept_step"] is not None else ""
    return f"{acted}{kept}"


def _table(rows: list[dict], guarded: bool = False) -> Table:
    table = Table(
        title="3D indicators (means over prompts; all digits in summary.json)",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        show_edge=False,
        header_style="bold",
    )
    table.add_column("scen", no_wrap=True)
    table.add_column("loss", no_wrap=True)
    columns = list(TABLE_COLUMNS) + ([("guard\nacts, kept", _guard_cell)] if guarded else [])
    for header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row["scenario"], row["loss_name"], *(cell(row) for _, cell in columns))
    return table


@renamed(Renamed("--steps", "max_steps", "--max-steps"))
def command(
    ctx: typer.Context,
    config: Path = CONFIG,
    out: Path = typer.Option(Path("runs/toy"), "--out", "-o", help="Folder for metrics.jsonl, summary.json and the figures.",
                                callback=options.output("folder")),
    scenario: str = typer.Option(
        "all", "--scenario", "-s", help="Which step-1 distributions: 1, 2, 3, 4, a comma list (1,3) or all."
    ),
    init_dist: Path | None = typer.Option(
        None,
        "--init-dist",
        help='A custom step-1 distribution instead of the scenarios: JSON {"name": .., "chosen": 0.3, '
        '"rejected": 0.1, "unseen": 0.05} (per response; other chosen share the rest) or {"probs": 4 rows of 10}.',
    ),
    loss: str = typer.Option("dpo", "--loss", "-l", help=f"Step-2 loss, from the registry: {', '.join(LOSSES)}."),
    sweep: bool = typer.Option(
        False, "--sweep/--no-sweep", help="Run every scenario × every loss of --losses; adds sweep.png and compares them."
    ),
    losses: str = typer.Option(
        DEFAULT_SWEEP_LOSSES, "--losses", help="With --sweep: the comma-separated losses to compare, or `all` (every loss of the registry)."
    ),
    compare: str | None = typer.Option(
        None, "--compare", help="The loss drawn beside DPO in landscape.png (default: the other losses run, else flex)."
    ),
    loss_args: list[str] = lo.LOSS_ARG,
    beta: float | None = lo.BETA,  # the deprecated per-loss flags (hidden): --loss-arg KEY=VALUE
    beta_chosen: float | None = lo.BETA_CHOSEN,
    beta_rejected: float | None = lo.BETA_REJECTED,
    sft_weight: float | None = lo.SFT_WEIGHT,
    label_smoothing: float | None = lo.LABEL_SMOOTHING,
    gamma: float | None = lo.GAMMA,
    delta: float | None = lo.DELTA,
    dpop_lambda: float | None = lo.DPOP_LAMBDA,
    list_losses: bool = lo.LIST_LOSSES,
    max_steps: int = options.max_steps(DEFAULT_STEPS, "Step-2 updates (full batch)."),
    lr: float = typer.Option(DEFAULT_LR, "--lr", help="Step-2 Adam learning rate."),
    hidden: int = typer.Option(64, "--hidden", help="Width of the MLP's two hidden layers."),
    sft_steps: int = typer.Option(300, "--sft-steps", help="Step-1 Adam updates towards the scenario's distribution."),
    sft_lr: float = typer.Option(1e-2, "--sft-lr", help="Step-1 Adam learning rate."),
    pairs_per_prompt: int = typer.Option(1, "--pairs-per-prompt", help="Preference pairs per prompt."),
    rejected_draw: str = typer.Option(
        "random",
        "--rejected-draw",
        help=f"How each pair's rejected is drawn from 5–8: {' or '.join(REJECTED_DRAWS)} (no repeat within a prompt).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds the MLP's init and the rejected draws; same seed, same metrics. The first seed of --seeds."),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1,
        help=f"How many seeds (--seed, --seed+1, ...): mean ± sd over them. Default {DEFAULT_SWEEP_SEEDS} with --sweep or --ablation, else 1.",
    ),
    ablation: bool = typer.Option(
        False, "--ablation/--no-ablation", help="DPO in four set-ups (default, one prompt alone, logit table, SGD) over --seeds: what drives degradation."
    ),
    sgd_lr: float = typer.Option(DEFAULT_SGD_LR, "--sgd-lr", help="--ablation: the SGD variant's learning rate."),
    tabular_lr: float = typer.Option(DEFAULT_TABULAR_LR, "--tabular-lr", help="--ablation: the logit table's Adam learning rate."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the PNGs (the slow part; skipped above 8 losses)."),
    metrics_every: int | None = typer.Option(
        None, "--metrics-every", min=1, help="Write every N-th step to metrics.jsonl (default 1; 25 above 8 losses)."
    ),
    workers: int | None = options.workers(
        None, "Processes to spread the scenarios over (default: 2 for sweeps of more than 16 runs, else 1).", minimum=1
    ),
    guard: str | None = typer.Option(
        None,
        "--guard",
        help=f"Act on the live 3D detector's warnings: {', '.join(POLICIES)} (an SFT term on the chosen, a lower β_l, "
        "or a stop that keeps the chosen's best step). Default: the detector only warns.",
    ),
    keep_best: str | None = typer.Option(
        None,
        "--keep-best",
        help=f"Report the state where the probe chosen log-prob peaked ({', '.join(KEEP_BEST)}); implied by --guard stop.",
    ),
) -> None:
    """Train the paper's toy model (4 prompts, 10 responses, an MLP) and measure the 3D-properties."""
    started = time.perf_counter()
    steps = max_steps  # step-2 updates
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    loss_names = (sorted(LOSSES) if losses.strip() == "all" else _split(losses)) if sweep else [loss]
    if not loss_names:
        raise UsageError("--losses lists no loss")
    scenarios = (load_distribution(init_dist),) if init_dist is not None else select_scenarios(_split(scenario) or ["all"])
    seed_count = seeds if seeds is not None else DEFAULT_SWEEP_SEEDS if sweep or ablation else 1
    # the losses bound once: an option none of them takes (or an unknown loss) is one line
    bound = lo.bind_cli_losses(ctx.params, loss_names)
    if ablation:
        if sweep or guard is not None or loss != "dpo":
            raise UsageError("--ablation trains DPO only; leave out --sweep, --guard and --loss")
        beta = float(bound[0].values["beta"])
        _ablation(out, scenarios, seed_list(seed, seed_count), steps, lr, sgd_lr, tabular_lr, beta, hidden, sft_steps, sft_lr, figures)
        return
    config = ToyConfig(
        scenarios=tuple(scenarios),
        losses=tuple(loss_names),
        hyperparameters={key: value for each in bound for key, value in each.options.items()},
        steps=steps,
        lr=lr,
        hidden=hidden,
        sft_steps=sft_steps,
        sft_lr=sft_lr,
        pairs_per_prompt=pairs_per_prompt,
        rejected_draw=rejected_draw,
        seed=seed,
        guard=guard,
        keep_best=keep_best,
    )
    config.validate()
    landscape = []
    if compare is not None:
        bind_loss(compare)  # an unknown name is one line, before any work
        landscape = ["dpo", compare] if compare != "dpo" else ["dpo"]

    if workers is None:  # a big sweep uses two cores (its runs are independent); a small one is not worth a fork
        workers = min(2, os.cpu_count() or 1) if seed_count * len(scenarios) * len(loss_names) > 16 else 1
    if seed_count > 1:
        _several_seeds(config, seed_list(seed, seed_count), workers, out, figures and len(loss_names) <= 8, landscape, metrics_every, started)
        return
    if workers > 1:
        console.print(f"toy: {len(scenarios)} scenario(s) × {len(loss_names)} losses on {workers} processes", highlight=False)
        result = run_toy_parallel(config, workers)
    else:
        with progress(transient=True) as bar:
            task = bar.add_task(f"toy: {len(scenarios)} scenario(s) × {', '.join(loss_names)}", total=steps + 1, rate="")
            result = run_toy(config, on_step=lambda done, total: bar.update(task, completed=done))
    trained = time.perf_counter()
    every = metrics_every if metrics_every is not None else (25 if len(loss_names) > 8 else 1)
    # more than 8 losses: no PNGs (a 4 × 33 grid reads as noise) and metrics.jsonl thinned to every 10th step
    written = write_outputs(
        result, out, figures=figures and len(loss_names) <= 8, landscape_losses=landscape, metrics_every=every
    )
    rows = indicators(result)
    if sweep:
        from dpo3d.toy.sweep_table import by_loss_markdown, mass_markdown, sweep_markdown

        table = sweep_markdown(rows) + "\n" + by_loss_markdown(rows, [s.name for s in scenarios]) + "\n" + mass_markdown(rows)
        tmp = out / ".sweep.md.tmp"
        tmp.write_text(table)
        tmp.replace(out / "sweep.md")
        written.append(out / "sweep.md")
    finished = time.perf_counter()

    console.print(_table(rows, guarded=guard is not None or keep_best is not None))
    for row in rows:
        for action in row["guard_actions"]:
            console.print(f"{row['run']}: {action['message']}", highlight=False, markup=False)
    console.print(
        f"wrote {', '.join(path.name for path in written)} to {out}/ in {finished - started:.1f} s "
        f"(training {trained - started:.1f} s, files and figures {finished - trained:.1f} s)",
        highlight=False,
    )


def _ablation(out, scenarios, seeds, steps, lr, sgd_lr, tabular_lr, beta, hidden, sft_steps, sft_lr, figures) -> None:
    from dpo3d.toy.ablation import AblationConfig, run_ablation
    from dpo3d.toy.report import write_ablation_outputs

    started = time.perf_counter()
    config = AblationConfig(
        scenarios=tuple(scenarios), seeds=seeds, steps=steps, lr=lr, sgd_lr=sgd_lr, tabular_lr=tabular_lr,
        beta=beta, hidden=hidden, sft_steps=sft_steps, sft_lr=sft_lr,
    )  # fmt: skip
    config.validate()
    console.print(f"toy ablation: {len(config.variants)} variants × {len(scenarios)} scenario(s) × {len(seeds)} seeds", highlight=False)
    results = run_ablation(config)
    written, _, table = write_ablation_outputs(config, results, out, figures)
    console.print(table, highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {', '.join(p.name for p in written)} to {out}/ in {time.perf_counter() - started:.1f} s", highlight=False)


def _several_seeds(config, seeds, workers, out, figures, landscape, metrics_every, started) -> None:
    from dpo3d.toy.report import write_seed_outputs
    from dpo3d.toy.seeds import cell, run_seeds

    console.print(f"toy: {len(config.scenarios)} scenario(s) × {len(config.losses)} losses × {len(seeds)} seeds "
                  f"on {min(workers, len(seeds))} process(es)", highlight=False)  # fmt: skip
    results = run_seeds(config, seeds, workers)
    trained = time.perf_counter()
    every = metrics_every if metrics_every is not None else 25
    written, groups = write_seed_outputs(results, out, figures=figures, landscape_losses=landscape, metrics_every=every)
    table = Table(title=f"mean ± sd over seeds {', '.join(map(str, seeds))} (all numbers in seeds.json)",
                  box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False, header_style="bold")  # fmt: skip
    columns = (
        ("chosen\npeak", lambda g: cell(g["peak_chosen"])),
        ("chosen\nfinal", lambda g: cell(g["final_chosen"])),
        ("post-peak\nfall", lambda g: cell(g["post_peak_fall"])),
        ("log10 x2\nfinal", lambda g: cell(g["log10_final_rejected"], "{:.0f}")),
        ("other ch.\nend", lambda g: cell(g["other_chosen_end"])),
        ("log10 unseen\n9–10 end", lambda g: cell(g["log10_unseen_end"], "{:.0f}")),
    )
    table.add_column("scen", no_wrap=True)
    table.add_column("loss", no_wrap=True)
    for header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True, min_width=max(map(len, header.split("\n"))))
    for g in groups:
        table.add_row(g["scenario"], g["loss_name"], *(read(g) for _, read in columns))
    console.print(table)
    finished = time.perf_counter()
    console.print(
        f"wrote {len(written)} files ({SEEDS_FILES}) to {out}/ in {finished - started:.1f} s "
        f"(training {trained - started:.1f} s, files and figures {finished - trained:.1f} s)",
        highlight=False,
    )


SEEDS_FILES = "seed-<k>/metrics.jsonl, seed-<k>/summary.json, seeds.json, sweep.md, sweep.png, landscape.png"

command.__doc__ = HELP  # Typer shows the docstring; the constants above are formatted into it
