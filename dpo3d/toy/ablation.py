"""What makes the toy's chosen probability fall: DPO under four set-ups, over several seeds.

The paper (Corollary 2) explains degradation by ∂L/∂x1 → 0 as x2 → 0: once the rejected
is gone, nothing steers the chosen. In the toy other causes are possible: the four
prompts share the MLP's weights, and Adam rescales every weight's step. Each variant
removes one of them and keeps everything else (the step-1 reference model, the pairs,
β, the number of steps):

- ``default``: the toy as ``run_toy`` trains it (shared MLP, the four pairs, Adam);
- ``alone``: the same MLP and Adam, but one prompt's pair is the whole data set; one
  run per prompt, the curve is the mean over prompts of each run's *trained* prompt;
- ``tabular``: a free logit table ``(prompts, responses)`` started at the reference's
  log-probs, so no parameter is shared between prompts; Adam, the four pairs;
- ``sgd``: the shared MLP and the four pairs, plain gradient descent (``--sgd-lr``).

Per run the chosen π(i|i) (mean over the trained prompts), x2 and log|∂L/∂x1| of the
trained pairs are recorded at every step. ``summarise`` turns them into the numbers the
ablation table reports per (scenario, variant): chosen peak and final, the post-peak
fall, and the Corollary-2 quantities (log10 x2 and log10 |∂L/∂x1| at the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import PreferenceBatch, bind_loss
from .model import DTYPE, Adam, ToyMLP, fit_distribution, one_thread
from .scenarios import N_PROMPTS, SCENARIOS, Scenario, draw_pairs
from .seeds import aggregate, cell
from .train import DEFAULT_LR, DEFAULT_STEPS

VARIANTS = ("default", "alone", "tabular", "sgd")
DESCRIPTIONS = {
    "default": "shared MLP, 4 prompts, Adam",
    "alone": "shared MLP, one prompt's pair alone, Adam",
    "tabular": "logit table (no shared weights), 4 prompts, Adam",
    "sgd": "shared MLP, 4 prompts, plain SGD",
}
#: plain SGD's default step: DPO's gradients on the weights are ~β·σ(-h) ≲ 0.05, so SGD needs a
#: far larger rate than Adam's 1e-3 to move the toy as much within the same steps
DEFAULT_SGD_LR = 1.0
#: the logit table's Adam rate: Adam moves each logit by about lr per step, so at the MLP's 1e-3 the table's
#: rejected logit falls ~1 nat in 1000 steps (x2 stays near 10^-2) and never reaches the x2 ≈ 0 regime
#: Corollary 2 is about; at 0.1 it falls ~100 nats, as far as the MLP's (x2 ≈ 1e-40)
DEFAULT_TABULAR_LR = 0.1
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class AblationConfig:
    scenarios: tuple[Scenario, ...] = tuple(SCENARIOS.values())
    variants: tuple[str, ...] = VARIANTS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    steps: int = DEFAULT_STEPS
    lr: float = DEFAULT_LR
    sgd_lr: float = DEFAULT_SGD_LR
    tabular_lr: float = DEFAULT_TABULAR_LR
    beta: float = 0.1
    hidden: int = 64
    sft_steps: int = 300
    sft_lr: float = 1e-2

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown ablation variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("give at least one seed, each once")
        if self.steps < 1 or self.lr <= 0 or self.sgd_lr <= 0 or self.tabular_lr <= 0 or self.beta <= 0:
            raise ValueError("steps, learning rates and β must be positive")


@dataclass
class TabularLogits:
    """One free logit per (run, prompt, response): prompt p's logits are ``table[:, p]`` and nothing else."""

    weights: list[torch.Tensor]  # [table (R, P, V)]

    @classmethod
    def from_log_probs(cls, log_probs: torch.Tensor) -> TabularLogits:
        return cls([log_probs.detach().clone().to(DTYPE).requires_grad_(True)])

    def logits(self) -> torch.Tensor:
        return self.weights[0]

    def log_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.logits(), dim=-1)


class SGD:
    """Plain gradient descent, ``param -= lr · grad``: no momentum, no per-weight rescaling."""

    def __init__(self, params: list[torch.Tensor], lr: float):
        self.params, self.lr = params, lr

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        for param, grad in zip(self.params, grads, strict=True):
            param.sub_(grad, alpha=self.lr)


@dataclass
class Trace:
    """Per run, per step (0 = the reference): shapes (runs, steps+1)."""

    chosen: torch.Tensor  # π(i|i), mean over the prompts whose pair is trained
    log_x2: torch.Tensor  # log x2, mean over the trained pairs
    log_grad_chosen: torch.Tensor  # log|∂L/∂x1| = log β + log σ(-h) - log x1 (DPO), mean over the trained pairs


def train_dpo(model, reference: torch.Tensor, pair_mask: torch.Tensor, optimizer, steps: int, beta: float, seed: int) -> Trace:
    """DPO on the toy's pairs (``draw_pairs(seed=seed)``), each run on the pairs its ``pair_mask`` row keeps.

    ``reference``: (runs, prompts, responses) log-probs; ``pair_mask``: (runs, pairs) of 0/1. A run's loss is
    the mean over its kept pairs, the objective the sum over runs (runs share no parameter).
    """
    pairs = draw_pairs(1, "random", seed)
    prompt, chosen, rejected = (torch.tensor(t) for t in (pairs.prompt, pairs.chosen, pairs.rejected))
    mask = pair_mask.to(DTYPE)
    kept = mask.sum(-1)
    reference_chosen, reference_rejected = reference[:, prompt, chosen], reference[:, prompt, rejected]
    n_runs = reference.shape[0]
    dpo = bind_loss("dpo", {"beta": beta})
    trace = Trace(*(torch.zeros(n_runs, steps + 1, dtype=DTYPE) for _ in range(3)))
    for step in range(steps + 1):
        log_probs = model.log_probs()
        chosen_logps, rejected_logps = log_probs[:, prompt, chosen], log_probs[:, prompt, rejected]
        batch = PreferenceBatch(
            chosen_logps.reshape(-1), rejected_logps.reshape(-1), reference_chosen.reshape(-1), reference_rejected.reshape(-1)
        )
        losses = dpo(batch).losses.reshape(n_runs, -1)
        with torch.no_grad():
            h = beta * (chosen_logps - reference_chosen - rejected_logps + reference_rejected)
            log_grad = torch.log(torch.tensor(beta, dtype=DTYPE)) + torch.nn.functional.logsigmoid(-h) - chosen_logps
            trace.chosen[:, step] = (chosen_logps.exp() * mask).sum(-1) / kept
            trace.log_x2[:, step] = (rejected_logps * mask).sum(-1) / kept
            trace.log_grad_chosen[:, step] = (log_grad * mask).sum(-1) / kept
        if step < steps:
            objective = ((losses * mask).sum(-1) / kept).sum()
            optimizer.step(list(torch.autograd.grad(objective, model.weights)))
    return trace


def run_seed(config: AblationConfig, seed: int) -> dict[str, Trace]:
    """Every variant for one seed; each variant's runs are the scenarios in order (``alone``: averaged over prompts)."""
    n_scenarios = len(config.scenarios)
    targets = torch.stack([s.tensor() for s in config.scenarios])
    sft = ToyMLP.init(n_scenarios, config.hidden, seed)
    fit_distribution(sft, targets, config.sft_steps, config.sft_lr)
    with torch.no_grad():
        reference = sft.log_probs()  # (scenarios, prompts, responses): the same reference for every variant
    every = torch.ones(n_scenarios, N_PROMPTS)
    traces = {}
    for variant in config.variants:
        if variant in ("default", "sgd"):
            policy = sft.take(list(range(n_scenarios)))
            optimizer = Adam(policy.weights, config.lr) if variant == "default" else SGD(policy.weights, config.sgd_lr)
            traces[variant] = train_dpo(policy, reference, every, optimizer, config.steps, config.beta, seed)
        elif variant == "tabular":
            policy = TabularLogits.from_log_probs(reference)
            traces[variant] = train_dpo(policy, reference, every, Adam(policy.weights, config.tabular_lr), config.steps, config.beta, seed)
        else:  # alone: run s·P + p trains scenario s on prompt p's pair only
            runs = [s for s in range(n_scenarios) for _ in range(N_PROMPTS)]
            policy = sft.take(runs)
            mask = torch.eye(N_PROMPTS).repeat(n_scenarios, 1)
            trace = train_dpo(policy, reference[runs], mask, Adam(policy.weights, config.lr), config.steps, config.beta, seed)
            traces[variant] = Trace(*(t.reshape(n_scenarios, N_PROMPTS, -1).mean(1) for t in vars(trace).values()))
    return traces


def run_ablation(config: AblationConfig) -> dict[int, dict[str, Trace]]:
    """``{seed: {variant: Trace}}``, every seed in turn (one thread: the toy's tensors are tiny)."""
    config.validate()
    with one_thread():
        return {seed: run_seed(config, seed) for seed in config.seeds}


def trace_numbers(trace: Trace, run: int) -> dict[str, float]:
    """The per-run numbers the ablation table aggregates over seeds."""
    chosen = trace.chosen[run]
    peak_step = int(chosen.argmax())
    peak, final = float(chosen[peak_step]), float(chosen[-1])
    ln10 = torch.log(torch.tensor(10.0, dtype=DTYPE))
    return {
        "initial_chosen": float(chosen[0]),
        "peak_chosen": peak,
        "peak_step": float(peak_step),
        "final_chosen": final,
        "post_peak_fall": peak - final,
        "log10_x2_at_peak": float(trace.log_x2[run, peak_step] / ln10),
        "log10_x2_final": float(trace.log_x2[run, -1] / ln10),
        "log10_grad_chosen_at_peak": float(trace.log_grad_chosen[run, peak_step] / ln10),
        "log10_grad_chosen_final": float(trace.log_grad_chosen[run, -1] / ln10),
    }


def per_seed_numbers(config: AblationConfig, results: dict[int, dict[str, Trace]]) -> list[dict]:
    """One row per (seed, scenario, variant) with ``trace_numbers``."""
    rows = []
    for seed, traces in results.items():
        for variant, trace in traces.items():
            for s, scenario in enumerate(config.scenarios):
                rows.append({"seed": seed, "scenario": scenario.name, "variant": variant, **trace_numbers(trace, s)})
    return rows


ABLATION_KEYS = (
    "initial_chosen", "peak_chosen", "peak_step", "final_chosen", "post_peak_fall",
    "log10_x2_at_peak", "log10_x2_final", "log10_grad_chosen_at_peak", "log10_grad_chosen_final",
)  # fmt: skip


def ablation_groups(config: AblationConfig, results: dict[int, dict[str, Trace]]) -> list[dict]:
    """Mean ± sd over seeds of ``trace_numbers`` per (scenario, variant), scenario-major."""
    groups = aggregate(per_seed_numbers(config, results), ABLATION_KEYS, by=("scenario", "variant"))
    order = {(s.name, v): k for k, (s, v) in enumerate((s, v) for s in config.scenarios for v in config.variants)}
    return sorted(groups, key=lambda g: order[g["scenario"], g["variant"]])


def ablation_markdown(config: AblationConfig, groups: list[dict]) -> str:
    seeds = groups[0]["seeds"] if groups else []
    lines = [
        f"DPO (β = {config.beta:g}), {config.steps} steps; Adam lr {config.lr:g} (tabular {config.tabular_lr:g}), "
        f"SGD lr {config.sgd_lr:g}. Mean ± sd (n − 1) over {len(seeds)} seeds ({', '.join(map(str, seeds))}).",
        "",
        "| scenario | variant | chosen start | chosen peak | peak step | chosen final | post-peak fall "
        "| log10 x2 at peak → final | log10 \\|∂L/∂x1\\| at peak → final |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        lines.append(
            f"| {g['scenario']} | {g['variant']} | {cell(g['initial_chosen'])} | {cell(g['peak_chosen'])} "
            f"| {cell(g['peak_step'], '{:.0f}')} | {cell(g['final_chosen'])} | {cell(g['post_peak_fall'])} "
            f"| {cell(g['log10_x2_at_peak'], '{:.1f}')} → {cell(g['log10_x2_final'], '{:.1f}')} "
            f"| {cell(g['log10_grad_chosen_at_peak'], '{:.1f}')} → {cell(g['log10_grad_chosen_final'], '{:.1f}')} |"
        )
    legend = "; ".join(f"{v}: {DESCRIPTIONS[v]}" for v in config.variants)
    return "\n".join(lines) + f"\n\nVariants — {legend}.\n"
