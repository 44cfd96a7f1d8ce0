"""Preference losses: one registry of pure functions, and their 3D gradient diagnostics.

Importing this package registers every loss (the modules below register on import).
"""

from . import bradley_terry, pointwise, targets  # noqa: F401  (registration side effect)
from .diagnostics import GradientDiagnostics, gradient_diagnostics
from .registry import LOSSES, LossOutput, LossSpec, PreferenceBatch, compute_loss, get_loss, register

__all__ = [
    "LOSSES",
    "GradientDiagnostics",
    "LossOutput",
    "LossSpec",
    "PreferenceBatch",
    "compute_loss",
    "get_loss",
    "gradient_diagnostics",
    "register",
]
