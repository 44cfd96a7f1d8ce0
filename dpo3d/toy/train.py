"""Both steps of the toy experiment, for every (scenario, loss) run at once.

Step 1 trains the MLP towards each scenario's hand-set distribution; that model
is frozen as the reference. Step 2 trains a copy of it on the preference pairs
with a loss from the registry, full batch, Adam. Every step records every
response's probability for every prompt, the loss, and, per pair, x1 = π(y_w|x),
x2 = π(y_l|x) with the gradients of the pair's loss with respect to them, twice:
the analytic ones of ``gradient_diagnostics`` and the ones autograd measures on
the training graph itself (the loss is computed from log(x), x the softmax
probability, and differentiated with respect to x).

Every step also feeds each run's probe values to train-dpo's live 3D detector
(watch.py); with ``guard`` its warnings change the run's loss (an SFT term, a
lower β_l) or stop the run, as ``dpo3d.watch.guard`` decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch

from ..losses import BoundLoss, PreferenceBatch, bind_losses, gradient_diagnostics_many
from ..watch.guard import BestTracker, Guard, GuardSettings
from .model import DTYPE, Adam, ToyMLP, fit_distribution, one_thread
from .scenarios import SCENARIOS, UNSEEN, Pairs, Scenario, draw_pairs
from .watch import TOY_DETECTOR, RunWatch

#: the default step-2 optimiser: Adam as in the paper (App. D.1); the paper's 5e-7 is for 13B/33B LLMs,
#: a toy MLP needs the usual small-network rate, and 1000 steps reach the x2 ≈ 0 regime in every scenario
DEFAULT_LR = 1e-3
DEFAULT_STEPS = 1000
#: the probe fields of ToyHistory, in the order RunWatch.observe takes them (watch.py: what each one is)
PROBES = ("probe_chosen", "probe_rejected", "probe_unseen", "probe_greedy")
#: a run stops when x1 or x2 falls below this (e^-690): past it float64 goes subnormal and the loss non-finite
UNDERFLOW = 1e-300


@dataclass(frozen=True)
class ToyConfig:
    """Everything that defines a toy experiment; the same config gives the same numbers."""

    scenarios: tuple[Scenario, ...] = tuple(SCENARIOS.values())
    losses: tuple[str, ...] = ("dpo",)
    hyperparameters: Mapping[str, float | None] = field(default_factory=dict)
    steps: int = DEFAULT_STEPS
    lr: float = DEFAULT_LR
    hidden: int = 64
    sft_steps: int = 300
    sft_lr: float = 1e-2
    pairs_per_prompt: int = 1
    rejected_draw: str = "random"
    seed: int = 0
    guard: str | None = None  # sft, flex or stop (dpo3d.watch.guard); None: the detector only warns
    keep_best: str | None = None  # "chosen": report the state where the probe chosen log-prob peaked
    guard_settings: GuardSettings = field(default_factory=GuardSettings)

    def validate(self) -> None:
        if not self.scenarios:
            raise ValueError("no scenario to run")
        if not self.losses:
            raise ValueError("no loss to run")
        bound = self.bound_losses()  # an unknown name or option raises a ValueError naming the valid ones
        if len(set(self.losses)) != len(self.losses):
            raise ValueError(f"a loss is listed twice: {', '.join(self.losses)}")
        if len({s.name for s in self.scenarios}) != len(self.scenarios):
            raise ValueError("two scenarios share a name")
        for key, value in (("steps", self.steps), ("hidden", self.hidden), ("sft steps", self.sft_steps)):
            if value < 1:
                raise ValueError(f"{key} must be at least 1, not {value}")
        if self.lr <= 0 or self.sft_lr <= 0:
            raise ValueError("learning rates must be > 0")
        if self.guard is not None:
            for loss in bound:  # a policy that cannot act on one of the losses is an error up front
                Guard.for_loss(self.guard, loss, self.guard_settings)
        if self.keep_best is not None:
            BestTracker.for_metric(self.keep_best)

    def bound_losses(self) -> list[BoundLoss]:
        """Each loss with the options it takes; an option none of them takes is an error."""
        return bind_losses(self.losses, self.hyperparameters)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["scenarios"] = [s.name for s in self.scenarios]
        record["losses"] = list(self.losses)
        record["hyperparameters"] = {k: v for k, v in self.hyperparameters.items() if v is not None}
        if self.guard is None:
            del record["guard_settings"]
        return record


@dataclass(frozen=True)
class ToyRun:
    """One (scenario, loss) run, with its bound loss."""

    run_id: str
    scenario_index: int
    scenario: Scenario
    bound: BoundLoss

    @property
    def loss(self) -> str:
        return self.bound.name

    @property
    def hyperparameters(self) -> dict[str, float]:
        """The options this loss takes, defaults filled in."""
        return self.bound.values


@dataclass
class ToyHistory:
    """Per run, per step (0 = the reference, before any update; ``steps`` = after the last).

    Shapes: ``probs`` (runs, steps+1, prompts, responses); ``loss`` (runs, steps+1);
    the rest (runs, steps+1, pairs). Gradients are of each pair's own loss.
    """

    probs: torch.Tensor
    loss: torch.Tensor
    chosen_logps: torch.Tensor  # log x1
    rejected_logps: torch.Tensor  # log x2
    margins: torch.Tensor  # (logp_w - ref_w) - (logp_l - ref_l), whatever the loss
    log_abs_grad_chosen: torch.Tensor  # log|∂L/∂x1| from gradient_diagnostics (analytic)
    log_abs_grad_rejected: torch.Tensor
    autograd_grad_chosen: torch.Tensor  # ∂L/∂x1 measured by autograd on the training graph (signed)
    autograd_grad_rejected: torch.Tensor
    # the detector's probes (watch.py), shape (runs, steps+1): changes since step 0, in nats
    probe_chosen: torch.Tensor
    probe_rejected: torch.Tensor
    probe_unseen: torch.Tensor
    probe_greedy: torch.Tensor

    @classmethod
    def empty(cls, n_runs: int, steps: int, n_pairs: int, n_prompts: int, n_responses: int) -> ToyHistory:
        per_pair = (n_runs, steps + 1, n_pairs)
        return cls(
            probs=torch.zeros(n_runs, steps + 1, n_prompts, n_responses, dtype=DTYPE),
            loss=torch.zeros(n_runs, steps + 1, dtype=DTYPE),
            **{name: torch.zeros(n_runs, steps + 1, dtype=DTYPE) for name in PROBES},
            **{name: torch.zeros(per_pair, dtype=DTYPE) for name in cls._per_pair_fields()},
        )

    @staticmethod
    def _per_pair_fields() -> tuple[str, ...]:
        return (
            "chosen_logps",
            "rejected_logps",
            "margins",
            "log_abs_grad_chosen",
            "log_abs_grad_rejected",
            "autograd_grad_chosen",
            "autograd_grad_rejected",
        )


@dataclass
class ToyResult:
    config: ToyConfig
    runs: list[ToyRun]
    pairs: Pairs
    targets: torch.Tensor  # (scenarios, prompts, responses): the hand-set step-1 distributions
    reference_probs: torch.Tensor  # (scenarios, prompts, responses): what step 1 reached
    sft_kl: torch.Tensor  # (scenarios,): largest per-prompt KL(target ‖ reference)
    history: ToyHistory
    stopped_at: list[int | None] = field(default_factory=list)  # per run: last step before x underflowed
    # per run: the detector's warnings, the guard's actions (GuardAction.record()), the step the
    # guard stopped it at, and the step kept (keep_best, or the guard's stop: where the chosen peaked)
    events: list[list[dict]] = field(default_factory=list)
    actions: list[list[dict]] = field(default_factory=list)
    guard_stopped_at: list[int | None] = field(default_factory=list)
    kept_step: list[int | None] = field(default_factory=list)


class ToyDiverged(ValueError):
    """A probability underflowed to 0 (or the loss went non-finite): the run left float64's range."""


def plan_runs(config: ToyConfig) -> list[ToyRun]:
    """Scenario-major: every loss of scenario 1, then of scenario 2, ..."""
    runs = []
    losses = config.bound_losses()  # bound once for the whole experiment
    for s, scenario in enumerate(config.scenarios):
        for name, loss in zip(config.losses, losses, strict=True):
            run_id = f"s{scenario.name}-{name}" if scenario.name.isdigit() else f"{scenario.name}-{name}"
            runs.append(ToyRun(run_id, s, scenario, loss))
    return runs


@lru_cache(maxsize=256)
def pools_over_batch(loss: BoundLoss) -> bool:
    """Whether a pair's ``loss`` depends on the other pairs of its batch (bco's batch-mean shift).

    Probed numerically on a fixed random batch: the loss of the whole against the loss of its halves.
    """
    generator = torch.Generator().manual_seed(0)
    logps = -5 * torch.rand(6, 8, generator=generator, dtype=DTYPE)

    def losses(part: slice) -> torch.Tensor:
        chosen, rejected, reference_chosen, reference_rejected, chosen_wpo, rejected_wpo = (t[part] for t in logps)
        batch = PreferenceBatch(
            chosen, rejected, reference_chosen, reference_rejected,
            chosen_wpo_logweights=chosen_wpo, rejected_wpo_logweights=rejected_wpo,
        )  # fmt: skip
        return loss(batch).losses

    return not torch.allclose(losses(slice(None)), torch.cat([losses(slice(0, 4)), losses(slice(4, 8))]), rtol=1e-12, atol=0)


def batch_chunks(losses: list[BoundLoss]) -> list[tuple[BoundLoss, list[int]]]:
    """Runs that may share one registry call: all runs of one bound loss (name and options), unless it pools
    over its batch (then one per run). ``losses`` holds each run's bound loss.

    Sharing a call only saves Python overhead; a separable loss gives every pair the same value either way.
    """
    chunks = []
    for loss in dict.fromkeys(losses):
        members = [r for r, other in enumerate(losses) if other == loss]
        if pools_over_batch(loss):
            chunks += [(loss, [r]) for r in members]
        else:
            chunks.append((loss, members))
    return chunks


def run_toy(config: ToyConfig, on_step: Callable[[int, int], None] | None = None) -> ToyResult:
    """Run step 1 per scenario, then step 2 for every (scenario, loss); ``on_step(done, total)`` reports progress."""
    config.validate()
    with one_thread():
        return _run(config, on_step)


def _run(config: ToyConfig, on_step: Callable[[int, int], None] | None) -> ToyResult:
    runs = plan_runs(config)
    pairs = draw_pairs(config.pairs_per_prompt, config.rejected_draw, config.seed)
    targets = torch.stack([s.tensor() for s in config.scenarios])

    sft = ToyMLP.init(len(config.scenarios), config.hidden, config.seed)
    sft_kl = fit_distribution(sft, targets, config.sft_steps, config.sft_lr)
    with torch.no_grad():
        reference_logps = sft.log_probs()

    policy = sft.take([run.scenario_index for run in runs])
    optimizer = Adam(policy.weights, lr=config.lr)
    prompt = torch.tensor(pairs.prompt)
    chosen = torch.tensor(pairs.chosen)
    rejected = torch.tensor(pairs.rejected)
    run_reference = reference_logps[[run.scenario_index for run in runs]]
    reference_chosen = run_reference[:, prompt, chosen]
    reference_rejected = run_reference[:, prompt, rejected]

    watches = [
        RunWatch.start(run.bound, config.guard, config.keep_best, config.guard_settings, TOY_DETECTOR)
        for run in runs
    ]
    chunks = batch_chunks([watch.current_loss for watch in watches])
    unseen = list(UNSEEN)
    reference_unseen = run_reference[:, :, unseen]
    # the squeezing probe: each prompt's most likely response under the reference (train-dpo's greedy one)
    greedy = run_reference.argmax(-1, keepdim=True)
    reference_greedy = run_reference.gather(-1, greedy)
    # it is a response in no pair only where every prompt's most likely one is unseen (9-10); in the four
    # scenarios it is some prompt's chosen or a rejected, so a gain there is not dispersion
    greedy_unpaired = torch.isin(greedy, torch.tensor(unseen)).flatten(1).all(-1).tolist()
    history = ToyHistory.empty(len(runs), config.steps, len(pairs), *targets.shape[1:])
    # a run whose x1 or x2 underflows (a loss unbounded below, e.g. robust) is stopped at its last good
    # weights and reported with the step; the other runs go on. Only when every run stops is it an error.
    stopped = torch.zeros(len(runs), dtype=torch.bool)
    stopped_at: list[int | None] = [None] * len(runs)
    previous = [w.detach().clone() for w in policy.weights]
    for step in range(config.steps + 1):
        probs = torch.softmax(policy.logits(), dim=-1)
        pair_probs = torch.cat([probs[:, prompt, chosen], probs[:, prompt, rejected]], dim=-1)
        underflow = (pair_probs < UNDERFLOW).any(-1) & ~stopped
        if bool(underflow.any()):
            if bool((stopped | underflow).all()):
                raise ToyDiverged(
                    f"step {step}: a probability underflowed to 0 "
                    f"({', '.join(run.run_id for r, run in enumerate(runs) if underflow[r])}); "
                    "use fewer steps or a smaller learning rate"
                )
            with torch.no_grad():
                for weight, good in zip(policy.weights, previous, strict=True):
                    weight[underflow] = good[underflow]
            for r in torch.nonzero(underflow).flatten().tolist():
                stopped_at[r] = step - 1
            stopped |= underflow
            probs = torch.softmax(policy.logits(), dim=-1)
        # x1, x2 are nodes of the training graph; the loss sees them only through log(x)
        x1 = probs[:, prompt, chosen]
        x2 = probs[:, prompt, rejected]
        chosen_logps, rejected_logps = x1.log(), x2.log()
        # WPO's log-weights: log x - log Σ_v π(v|prompt)², a constant of the step (one-token responses)
        log_sum_sq = torch.logsumexp(2 * probs[:, prompt, :].log(), dim=-1).detach()
        chosen_wpo, rejected_wpo = chosen_logps.detach() - log_sum_sq, rejected_logps.detach() - log_sum_sq
        # the detector's probes, then the guard: an action changes this step's loss (or stops the run)
        with torch.no_grad():
            probe = torch.stack(
                [
                    (chosen_logps - reference_chosen).mean(-1),
                    (rejected_logps - reference_rejected).mean(-1),
                    (probs[:, :, unseen].log() - reference_unseen).mean((-1, -2)),
                    (probs.gather(-1, greedy).log() - reference_greedy).mean((-1, -2)),
                ]
            )
        for name, values in zip(PROBES, probe, strict=True):
            getattr(history, name)[:, step] = values
        changed = False
        for r, (watch, values) in enumerate(zip(watches, probe.T.tolist(), strict=True)):
            if not bool(stopped[r]):
                changed |= watch.observe(step, *values, greedy_unpaired=greedy_unpaired[r])
                if watch.stopped_at == step:
                    stopped[r] = True  # frozen from here on, as a run that underflowed
        if changed:
            chunks = batch_chunks([watch.current_loss for watch in watches])
        run_losses: list[torch.Tensor] = [torch.zeros((), dtype=DTYPE)] * len(runs)
        probes = []
        for loss, members in chunks:
            index = torch.tensor(members)
            batch = PreferenceBatch(
                chosen_logps[index].reshape(-1),
                rejected_logps[index].reshape(-1),
                reference_chosen[index].reshape(-1),
                reference_rejected[index].reshape(-1),
                chosen_wpo_logweights=chosen_wpo[index].reshape(-1),
                rejected_wpo_logweights=rejected_wpo[index].reshape(-1),
            )
            per_pair = loss(batch).losses.reshape(len(members), len(pairs))
            for r, mean in zip(members, per_pair.mean(-1).unbind(), strict=True):
                run_losses[r] = mean
            probes.append((loss, batch))
        # the registry's diagnostics of every chunk, in one backward pass
        for (_, members), diagnostics in zip(chunks, gradient_diagnostics_many(probes), strict=True):
            index = torch.tensor(members)
            history.log_abs_grad_chosen[index, step] = diagnostics.log_abs_grad_chosen.reshape(len(members), -1)
            history.log_abs_grad_rejected[index, step] = diagnostics.log_abs_grad_rejected.reshape(len(members), -1)
        objective = torch.stack(run_losses).sum()
        history.loss[:, step] = torch.stack(run_losses).detach()
        if not torch.isfinite(objective) or (x2.detach() == 0).any() or (x1.detach() == 0).any():
            broken = [
                run.run_id for r, run in enumerate(runs)
                if not torch.isfinite(run_losses[r]) or (x2.detach()[r] == 0).any() or (x1.detach()[r] == 0).any()
            ]  # fmt: skip
            raise ToyDiverged(
                f"step {step}: a probability underflowed to 0 or the loss is not finite ({', '.join(broken)}); "
                "use fewer steps or a smaller learning rate"
            )
        wanted = [x1, x2] + (policy.weights if step < config.steps else [])
        grads = torch.autograd.grad(objective, wanted, allow_unused=True)  # sft alone never reads x2
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wanted, strict=True)]
        # the objective holds each run's *mean* loss; per pair, ∂L_k/∂x = n_pairs · ∂mean/∂x
        history.autograd_grad_chosen[:, step] = grads[0] * len(pairs)
        history.autograd_grad_rejected[:, step] = grads[1] * len(pairs)
        history.probs[:, step] = probs.detach()
        history.chosen_logps[:, step] = chosen_logps.detach()
        history.rejected_logps[:, step] = rejected_logps.detach()
        history.margins[:, step] = (chosen_logps - reference_chosen - rejected_logps + reference_rejected).detach()
        if step < config.steps:
            previous = [w.detach().clone() for w in policy.weights]
            optimizer.step(list(grads[2:]))
            if bool(stopped.any()):
                with torch.no_grad():  # Adam's momentum would move a stopped run: put it back
                    for weight, good in zip(policy.weights, previous, strict=True):
                        weight[stopped] = good[stopped]
        if on_step is not None:
            on_step(step + 1, config.steps + 1)

    return ToyResult(
        config=config,
        runs=runs,
        pairs=pairs,
        targets=targets,
        reference_probs=reference_logps.exp(),
        sft_kl=sft_kl,
        history=history,
        stopped_at=stopped_at,
        events=[watch.events for watch in watches],
        actions=[watch.actions for watch in watches],
        guard_stopped_at=[watch.stopped_at for watch in watches],
        kept_step=[watch.kept_step for watch in watches],
    )
