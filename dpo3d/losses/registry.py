"""The loss registry: every preference loss of the suite, by name.

A loss is a pure function ``fn(batch: PreferenceBatch, **hyperparameters) -> LossOutput``
of sequence log-prob tensors. A run binds its loss once (``bound.bind_loss``: the spec and its
checked options) and passes that down; no loop branches on a loss's name; ``--loss`` choices come from ``LOSSES``.
A loss that needs more than the sequence sums declares it in ``inputs`` (``LOSS_INPUTS``)
and the loop fills those fields of the batch; ``lookup.get_loss("dpo:0.8,sft:1")`` builds a
weighted mixture; ``UNAVAILABLE`` names losses deliberately absent, with the reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch


@dataclass(frozen=True)
class PreferenceBatch:
    """Per-pair inputs of a preference loss; every tensor has shape ``(batch,)``.

    Log-probs are *summed* over the response tokens (prompt excluded). Losses
    that want length-averaged log-probs divide by the token counts themselves,
    so derivatives taken with respect to these sums are always derivatives with
    respect to ``log x`` for the sequence probability ``x``.
    """

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    reference_chosen_logps: torch.Tensor | None = None
    reference_rejected_logps: torch.Tensor | None = None
    chosen_lengths: torch.Tensor | None = None
    rejected_lengths: torch.Tensor | None = None
    # token-level extras, filled only for losses that declare them in ``inputs`` (see LOSS_INPUTS):
    # "shared": log-probs summed over the first min(|y_w|, |y_l|) response tokens of the pair (LD-DPO)
    policy_chosen_shared_logps: torch.Tensor | None = None
    policy_rejected_shared_logps: torch.Tensor | None = None
    reference_chosen_shared_logps: torch.Tensor | None = None
    reference_rejected_shared_logps: torch.Tensor | None = None
    # "wpo": per response, mean over its tokens of log π(y_t) - log Σ_v π(v)² (WPO's weight, in log; no gradient)
    chosen_wpo_logweights: torch.Tensor | None = None
    rejected_wpo_logweights: torch.Tensor | None = None

    def lengths(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Token counts, defaulting to 1 (a one-token 'sequence', as in the toy model)."""
        ones = torch.ones_like(self.policy_chosen_logps)
        chosen = self.chosen_lengths if self.chosen_lengths is not None else ones
        rejected = self.rejected_lengths if self.rejected_lengths is not None else ones
        return chosen.to(self.policy_chosen_logps), rejected.to(self.policy_chosen_logps)

    def logratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logp_w - ref_w, logp_l - ref_l)``, summed over tokens."""
        if self.reference_chosen_logps is None or self.reference_rejected_logps is None:
            raise ValueError("this loss needs reference log-probs (reference_chosen_logps/reference_rejected_logps)")
        return (
            self.policy_chosen_logps - self.reference_chosen_logps,
            self.policy_rejected_logps - self.reference_rejected_logps,
        )

    def mean_logratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token (length-averaged) log-ratios."""
        chosen, rejected = self.logratios()
        chosen_len, rejected_len = self.lengths()
        return chosen / chosen_len, rejected / rejected_len

    def shared_logps(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Policy chosen/rejected and reference chosen/rejected, summed over the pair's shared length.

        Without explicit values, a pair of one-token responses (no lengths given, as in the toy
        model) shares its whole length: the shared sums are the sums.
        """
        given = (
            self.policy_chosen_shared_logps,
            self.policy_rejected_shared_logps,
            self.reference_chosen_shared_logps,
            self.reference_rejected_shared_logps,
        )
        if all(t is not None for t in given):
            return given  # type: ignore[return-value]
        if self.chosen_lengths is None and self.rejected_lengths is None:
            self.logratios()  # raises if the reference is missing
            return (
                self.policy_chosen_logps,
                self.policy_rejected_logps,
                self.reference_chosen_logps,
                self.reference_rejected_logps,
            )  # type: ignore[return-value]
        raise ValueError("this loss needs log-probs split at the shared length (policy_*_shared_logps, reference_*_shared_logps)")

    def wpo_logweights(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.chosen_wpo_logweights is None or self.rejected_wpo_logweights is None:
            raise ValueError("this loss needs WPO log-weights (chosen_wpo_logweights/rejected_wpo_logweights)")
        return self.chosen_wpo_logweights, self.rejected_wpo_logweights


@dataclass
class LossOutput:
    """Per-pair losses (the batch loss is their mean) and the implicit rewards."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        return self.losses.mean()

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards


LossFn = Callable[..., LossOutput]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its function, how it reads log-probs, and its hyper-parameters."""

    name: str
    fn: LossFn
    log_probs: Literal["sum", "mean"]
    needs_reference: bool
    source: str
    defaults: Mapping[str, float | None] = field(default_factory=dict)
    inputs: frozenset[str] = frozenset()  # token-level extras the loss reads: "shared", "wpo"
    note: str = ""  # a convention or a departure from the source a user must know; --list-losses prints it

    @property
    def summary(self) -> str:
        """First line of the function's docstring: the formula."""
        return (inspect.getdoc(self.fn) or "").splitlines()[0]

    def select(self, hyperparameters: Mapping[str, float | None]) -> dict[str, float]:
        """Keep the hyper-parameters this loss takes; None means 'use the default'."""
        return {key: value for key, value in hyperparameters.items() if key in self.defaults and value is not None}

    def __call__(self, batch: PreferenceBatch, **hyperparameters: float | None) -> LossOutput:
        return self.fn(batch, **self.select(hyperparameters))


LOSSES: dict[str, LossSpec] = {}

#: the token-level extras a loss may ask for (LossSpec.inputs); a training loop fills the fields named here
LOSS_INPUTS = {
    "shared": "log-probs summed over the pair's shared length min(|y_w|, |y_l|), policy and reference",
    "wpo": "WPO log-weights: mean over a response's tokens of log π(y_t) - log Σ_v π(v)²",
}

#: names users look for that the registry deliberately does not hold, with the reason
UNAVAILABLE: dict[str, str] = {
    "balanced-dpo": (
        "Balanced-DPO (Ma et al. 2025, arXiv 2502.20847) is not implemented: its reweighting formula is not in "
        "any public source we could check (only the abstract is available), and we do not invent one under its "
        "name. Its aim, equal chosen/rejected gradients, is served by adadpo, bpo and bdpo."
    ),
}

MIXTURE_SEPARATORS = (",", ":")


def register(
    name: str,
    *,
    log_probs: Literal["sum", "mean"],
    source: str,
    needs_reference: bool = True,
    inputs: tuple[str, ...] = (),
    note: str = "",
):
    """Decorator: add a loss to the registry under ``name``; its keyword-only parameters are its hyper-parameters.

    ``note``: what a reader of the source would get wrong about this implementation (a different
    convention, a clamp the source lacks, a part of the source that could not be checked).
    """

    def wrap(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' registered twice")
        unknown = set(inputs) - set(LOSS_INPUTS)
        if unknown:
            raise ValueError(f"loss '{name}' asks for unknown inputs {sorted(unknown)}")
        params = inspect.signature(fn).parameters
        defaults = {key: p.default for key, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        LOSSES[name] = LossSpec(name, fn, log_probs, needs_reference, source, defaults, frozenset(inputs), note)
        return fn

    return wrap
