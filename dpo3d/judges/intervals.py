"""A 95% interval for an accuracy: the Wilson score interval.

A study's test sets are small (tens of problems) and its accuracies often near 0 or 1, where the
normal approximation p ± z·sqrt(p(1-p)/n) is too narrow and leaves [0, 1] (3 right of 20: 0.15 ± 0.156).
Wilson's interval (E. B. Wilson, "Probable inference, the law of succession, and statistical
inference", JASA 1927) inverts the score test instead: the p whose z-score for the observed share is
within ±z. It stays inside [0, 1] and is not empty at 0 or n right.
"""

from __future__ import annotations

import math

#: the standard normal's 97.5% quantile: a two-sided 95% interval
Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``correct`` successes in ``n`` trials (None for n = 0)::

        centre = (p + z²/2n) / (1 + z²/n),  half = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)
    """
    if n == 0:
        return None
    if not 0 <= correct <= n:
        raise ValueError(f"{correct} right of {n}")
    p = correct / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 or n right the bound is exactly 0 or 1; rounding must not push it past
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def wilson_json(correct: int, n: int) -> list[float] | None:
    """The Wilson interval as JSON stores it: ``[low, high]``, or None for n = 0."""
    interval = wilson(correct, n)
    return None if interval is None else list(interval)


def interval_text(accuracy: float | None, interval) -> str:
    """"15.0% [5.2, 36.0]": the accuracy and its interval, in percent."""
    if accuracy is None:
        return "—"
    if interval is None:
        return f"{accuracy:.1%}"
    low, high = interval
    return f"{accuracy:.1%} [{100 * low:.1f}, {100 * high:.1f}]"
