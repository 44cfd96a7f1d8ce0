"""The loss registry: every preference loss of the suite, by name.

A loss is a pure function ``fn(batch: PreferenceBatch, **hyperparameters) -> LossOutput``
of sequence log-prob tensors. Training loops and the toy model look losses up
here and never branch on a loss's name; ``--loss`` choices come from ``LOSSES``.
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


def register(name: str, *, log_probs: Literal["sum", "mean"], source: str, needs_reference: bool = True):
    """Decorator: add a loss to the registry under ``name``."""

    def wrap(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' registered twice")
        params = inspect.signature(fn).parameters
        defaults = {key: p.default for key, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        LOSSES[name] = LossSpec(name, fn, log_probs, needs_reference, source, defaults)
        return fn

    return wrap


def get_loss(name: str) -> LossSpec:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}'; choose from: {', '.join(sorted(LOSSES))}") from None


def compute_loss(name: str, batch: PreferenceBatch, **hyperparameters: float | None) -> LossOutput:
    """Look a loss up and apply it; hyper-parameters it does not take are ignored."""
    return get_loss(name)(batch, **hyperparameters)
