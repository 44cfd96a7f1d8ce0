"""A loss by name: a registered loss, or a weighted mixture of them (``dpo:0.8,sft:1``).

Apart from the registry so that mixtures (built from registered losses) and the lookup
(which builds mixtures) import in one direction.
"""

from __future__ import annotations

from .mixture import mixture_spec
from .registry import LOSSES, MIXTURE_SEPARATORS, UNAVAILABLE, LossOutput, LossSpec, PreferenceBatch


def get_loss(name: str) -> LossSpec:
    """A registered loss, or a weighted mixture written ``dpo:0.8,bco:0.2,sft:1.0``."""
    if any(separator in name for separator in MIXTURE_SEPARATORS):
        return mixture_spec(name)
    try:
        return LOSSES[name]
    except KeyError:
        if name in UNAVAILABLE:
            raise ValueError(UNAVAILABLE[name]) from None
        raise ValueError(f"unknown loss '{name}'; choose from: {', '.join(sorted(LOSSES))}") from None


def compute_loss(name: str, batch: PreferenceBatch, **hyperparameters: float | None) -> LossOutput:
    """Look a loss up and apply it; hyper-parameters it does not take are ignored."""
    return get_loss(name)(batch, **hyperparameters)
