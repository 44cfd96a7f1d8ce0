"""Preference losses: one registry of pure functions, and their 3D gradient diagnostics.

Importing this package registers every loss (the modules below register on import):
bradley_terry (DPO and its -log σ(margin) kin), pointwise (per-response rewards, cal-dpo),
targets (squared / hinge margins), balanced (the balanced-gradient family: adadpo, bpo, bdpo),
trl_variants (aot, discopop, sigmoid-norm, bco-pair), divergences (f-DPO), token_level
(ld-dpo, wpo: token-level inputs), reference_free (orpo, cpo, sft, simper), adaptive_beta
(beta-dpo, epsilon-dpo), kto (KTO on pairs). ``get_loss`` also builds
weighted mixtures (mixture.py, lookup.py); options.py reads ``name=value`` loss options and
``bind_loss`` (bound.py) checks them once, giving the ``BoundLoss`` a run trains with.
"""

from . import (  # noqa: F401  (registration side effect)
    adaptive_beta,
    balanced,
    bradley_terry,
    divergences,
    kto,
    pointwise,
    reference_free,
    targets,
    token_level,
    trl_variants,
)
from .bound import BoundLoss, bind_loss, bind_losses
from .diagnostics import GradientDiagnostics, gradient_diagnostics, gradient_diagnostics_many
from .lookup import compute_loss, get_loss
from .options import format_defaults, split_loss_args
from .registry import (
    LOSS_INPUTS,
    LOSSES,
    UNAVAILABLE,
    LossOutput,
    LossSpec,
    PreferenceBatch,
    register,
)

__all__ = [
    "LOSSES",
    "LOSS_INPUTS",
    "UNAVAILABLE",
    "BoundLoss",
    "GradientDiagnostics",
    "LossOutput",
    "LossSpec",
    "PreferenceBatch",
    "bind_loss",
    "bind_losses",
    "compute_loss",
    "format_defaults",
    "get_loss",
    "gradient_diagnostics",
    "gradient_diagnostics_many",
    "split_loss_args",
    "register",
]
