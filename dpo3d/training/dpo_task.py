"""The DPO-family task: any loss of the registry, with the 3D diagnostics measured live."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field

import torch

from dpo3d.pairs.pair_set import PairSet
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.pair_logps import pair_logps_with_extras

from ..losses import BoundLoss, PreferenceBatch, gradient_diagnostics
from ..watch.detector import ThreeDDetector
from ..watch.probes import ProbeScorer, probe_sets
from ..watch.run import RunWatch
from . import ref_sync
from .control import StepControl
from .task import Task


@dataclass
class DPOSettings:
    probe_size: int = 16
    grad_split_every: int = 0
    eval_every: int = 0
    score_batch_size: int = 16
    padding_side: str = "right"
    logprobs: LogprobOptions = field(default_factory=LogprobOptions)  # chunked LM head, packing


@dataclass
class DPOTask(Task):
    """The bound ``loss`` of a micro-batch of pairs; probes, eval and grad split at logged steps.

    ``reference`` holds summed reference log-probs: ``chosen``, ``rejected`` (train pairs),
    ``eval_chosen``, ``eval_rejected`` (if eval pairs) and ``unseen`` (the unseen subset).
    ``watch`` is the live 3D detector with the run's guard and best-step tracker: a guard's
    action changes the loss the following steps train (and evaluate) with.
    """

    bound_loss: BoundLoss
    pairs: PairSet
    reference: dict[str, torch.Tensor]
    settings: DPOSettings
    pad_id: int
    probe_set: list[int]
    probe_pairs: PairSet | None = None  # where probe_set points (and the unseen candidates come from); None: pairs
    eval_pairs: PairSet | None = None
    baseline: InitVar[dict[str, float] | None] = None  # probe values at step 0 (read back on resume): the scorer's
    watch: RunWatch | None = None  # None: the detector alone (no guard, no keep-best)
    total_steps: int = 0  # set by the loop: the last step is always evaluated
    # the squeezing probes: the starting policy's greedy response and samples per probe prompt
    probe_responses: dict[str, list] = field(default_factory=dict)
    # TR-DPO: the reference moves toward the policy every τ steps and ``reference`` is scored again; None: fixed
    sync: ref_sync.ReferenceSync | None = None

    _control: StepControl = field(default_factory=StepControl, repr=False)
    scorer: ProbeScorer = field(init=False, repr=False)  # the probe set and its baseline (dpo3d.watch.probes)

    def __post_init__(self, baseline: dict[str, float] | None) -> None:
        if self.watch is None:
            self.watch = RunWatch(self.bound_loss)
        probed = self.probe_pairs if self.probe_pairs is not None else self.pairs
        probes = probe_sets(probed.chosen, probed.rejected, self.probe_set, probed.unseen, self.probe_responses)
        self.scorer = ProbeScorer(probes, self.pad_id, self.settings.score_batch_size, self.settings.padding_side,
                                  self.settings.logprobs, baseline)

    @property
    def logprob_options(self) -> LogprobOptions:
        """How this task scores responses (the loop settles the features on every process before training)."""
        return self.settings.logprobs

    @property
    def probe_gradients(self) -> bool:
        """The gradient split differentiates the probes with respect to the parameters."""
        return bool(self.settings.grad_split_every)

    @property
    def detector(self) -> ThreeDDetector:
        return self.watch.detector

    def current_loss(self) -> BoundLoss:
        """The loss to train with now: the run's own, or the one the guard changed it to."""
        return self.watch.current_loss

    def lengths(self) -> list[int]:
        return self.pairs.lengths()

    def _batch(self, model, pairs: PairSet, indices: list[int], prefix: str = "") -> tuple[PreferenceBatch, object, object]:
        wanted = self.bound_loss.inputs  # token-level extras the loss declares (ld-dpo, wpo), read generically
        chosen_seqs, rejected_seqs = [pairs.chosen[i] for i in indices], [pairs.rejected[i] for i in indices]
        chosen, rejected, extras = pair_logps_with_extras(
            model, chosen_seqs, rejected_seqs, self.pad_id, self.settings.padding_side, wanted, self.settings.logprobs
        )
        index = torch.tensor(indices)
        device = chosen.sum.device

        def reference(name: str) -> torch.Tensor | None:
            found = self.reference.get(f"{prefix}{name}")
            return None if found is None else found[index].to(device)

        batch = PreferenceBatch(
            policy_chosen_logps=chosen.sum,
            policy_rejected_logps=rejected.sum,
            reference_chosen_logps=reference("chosen"),
            reference_rejected_logps=reference("rejected"),
            chosen_lengths=chosen.count,
            rejected_lengths=rejected.count,
            policy_chosen_shared_logps=extras.get("chosen_shared"),
            policy_rejected_shared_logps=extras.get("rejected_shared"),
            reference_chosen_shared_logps=reference("chosen_shared") if "shared" in wanted else None,
            reference_rejected_shared_logps=reference("rejected_shared") if "shared" in wanted else None,
            chosen_wpo_logweights=extras.get("chosen_wpo"),
            rejected_wpo_logweights=extras.get("rejected_wpo"),
        )
        return batch, chosen, rejected

    def loss(self, model, indices: list[int]):
        batch, chosen, rejected = self._batch(model, self.pairs, indices)
        loss = self.current_loss()
        output = loss(batch)
        diagnostics = gradient_diagnostics(loss, batch)
        metrics = {
            "loss": output.losses,
            "chosen_logp": chosen.sum,
            "rejected_logp": rejected.sum,
            "chosen_logp_per_token": chosen.mean,
            "rejected_logp_per_token": rejected.mean,
            "chosen_logp_change": chosen.sum - batch.reference_chosen_logps,
            "rejected_logp_change": rejected.sum - batch.reference_rejected_logps,
            "chosen_reward": output.chosen_rewards,
            "rejected_reward": output.rejected_rewards,
            "margin": output.margins,
            "accuracy": (output.margins > 0).float(),
            "log_grad_chosen": diagnostics.log_abs_grad_chosen,
            "log_grad_rejected": diagnostics.log_abs_grad_rejected,
            "logp_grad_chosen": diagnostics.chosen_logp_grad,
            "logp_grad_rejected": diagnostics.rejected_logp_grad,
        }
        return output.loss, metrics

    # ------------------------------------------------------------------ measurements at logged steps

    def _evaluate(self, model) -> dict[str, float]:
        pairs = self.eval_pairs
        totals = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}
        size = self.settings.score_batch_size
        loss = self.current_loss()
        with torch.no_grad():
            for start in range(0, len(pairs), size):
                indices = list(range(start, min(start + size, len(pairs))))
                batch, _, _ = self._batch(model, pairs, indices, prefix="eval_")
                output = loss(batch)
                totals["loss"] += float(output.losses.sum())
                totals["accuracy"] += float((output.margins > 0).float().sum())
                totals["margin"] += float(output.margins.sum())
        return {f"eval_{key}": value / len(pairs) for key, value in totals.items()}

    def _grad_split(self, model, indices: list[int]) -> dict[str, float]:
        """Parameter-gradient norm coming through the chosen side alone and the rejected side alone."""
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad():
            batch, _, _ = self._batch(model, self.pairs, indices)
            diagnostics = gradient_diagnostics(self.current_loss(), batch)
            n = len(indices)
            norms = {}
            for side, logps, grad in (
                ("chosen", batch.policy_chosen_logps, diagnostics.chosen_logp_grad),
                ("rejected", batch.policy_rejected_logps, diagnostics.rejected_logp_grad),
            ):
                grads = torch.autograd.grad(
                    logps, params, grad_outputs=(grad / n).to(logps.dtype), retain_graph=side == "chosen", allow_unused=True
                )
                norms[f"grad_norm_{side}_side"] = float(
                    torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None]))
                )
        return norms

    def probe(self, model, step: int, indices: list[int]) -> dict[str, float]:
        values = self.scorer.measure(model, step)
        every = self.settings.eval_every
        if self.eval_pairs is not None and (step in (0, self.total_steps) or (every and step % every == 0)):
            values.update(self._evaluate(model))
        split = self.settings.grad_split_every
        if split and step > 0 and step % split == 0 and indices:
            values.update(self._grad_split(model, indices))
        return values

    # ------------------------------------------------------------------ the moving reference (TR-DPO)

    def after_update(self, model, step: int) -> bool:
        """At a sync step: the reference's weights moved toward ``model``'s, every cached group scored again."""
        sync = self.sync
        if sync is None or not ref_sync.is_sync_step(step, sync.every, self.total_steps):
            return False
        sync.update(model)
        self.reference = sync.scores()
        return True

    def extra_models(self) -> dict:
        return {} if self.sync is None else {"reference": self.sync.model}

    def restore(self, step: int) -> None:
        """A resumed run's reference weights are the checkpoint's: score them again once a sync moved them."""
        if self.sync is not None and ref_sync.syncs_up_to(step, self.sync.every, self.total_steps):
            self.reference = self.sync.scores()

    # ------------------------------------------------------------------ the detector and the guard (main process)

    def check(self, record: dict) -> list[str]:
        """The detector's warnings and the guard's actions (also added to ``record`` as ``guard_actions``);
        under --ref-sync the syncs so far (``ref_syncs``) and ``ref_synced`` on a sync step's record."""
        if self.sync is not None:
            step, every = int(record["step"]), self.sync.every
            record["ref_syncs"] = ref_sync.syncs_up_to(step, every, self.total_steps)
            if step and ref_sync.is_sync_step(step, every, self.total_steps):
                record["ref_synced"] = True
        warnings, actions, is_best = self.watch.read(record)
        if actions:
            record["guard_actions"] = [action.record() for action in actions]
        if is_best:
            record["best_step"] = int(record["step"])
        self._control = StepControl(stop=self.watch.should_stop, save_best=is_best, state=self.watch.state())
        return warnings + [action.message for action in actions]

    def control(self) -> StepControl:
        """What the last ``check`` decided, for the loop to send to every process."""
        return self._control

    def apply_control(self, state: dict) -> None:
        self.watch.apply(state)

    def resume(self, records: list[dict], saved_best_step: int | None) -> list[str]:
        """Replay the resumed run's records (detector, guard, tracker end as they were); warnings."""
        self.watch.replay(records)
        self._control = StepControl(stop=self.watch.should_stop, state=self.watch.state())
        kept = self.watch.kept_step
        if kept is not None and kept != saved_best_step:
            self.watch.forget_best()
            return [f"--resume: the saved best state (step {saved_best_step}) is not the best logged up to the "
                    f"checkpoint (step {kept}); the next logged step becomes the best"]
        return []
