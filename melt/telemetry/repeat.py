"""Adaptive repetition: run again until the confidence interval is narrow enough."""

from __future__ import annotations

import math
from typing import Sequence


def ci_half_width(values: Sequence[float], confidence: float = 0.95) -> float:
    """Half width of the Student-t confidence interval of the mean (inf with < 2 values)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return math.inf
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)


def needs_more(values: Sequence[float], *, rel_half_width: float = 0.05, confidence: float = 0.95,
               min_n: int = 3, max_n: int = 20) -> bool:
    """True while fewer than ``min_n`` values, or the CI half width exceeds
    ``rel_half_width`` of the mean and fewer than ``max_n`` values were taken."""
    n = len(values)
    if n < min_n:
        return True
    if n >= max_n:
        return False
    mean = abs(sum(values) / n)
    return mean == 0 or ci_half_width(values, confidence) > rel_half_width * mean
