"""Step detection on a metric's history: where did the level change, and by how much.

Binary segmentation: split a series where the two sides differ the most
(least squared error), keep the split only when both sides hold at least
``min_size`` points, their medians differ by more than ``floor`` (relative)
and Welch's t-test says so at ``alpha``; then look again inside each side.
Pure functions on sequences, tested on synthetic step series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Step:
    """A level change before position ``index`` (the first point of the new level)."""

    index: int
    before: float  # median of the segment before
    after: float  # median of the segment after
    change: float  # (after - before) / |before|
    p_value: float


def _best_split(v: np.ndarray, min_size: int) -> int | None:
    n = len(v)
    if n < 2 * min_size:
        return None
    csum, csq = np.cumsum(v), np.cumsum(v * v)
    total, total_sq = csum[-1], csq[-1]
    ks = np.arange(min_size, n - min_size + 1)  # left side is v[:k]
    left_n, right_n = ks, n - ks
    left_s, left_q = csum[ks - 1], csq[ks - 1]
    right_s, right_q = total - left_s, total_sq - left_q
    sse = (left_q - left_s**2 / left_n) + (right_q - right_s**2 / right_n)
    return int(ks[int(np.argmin(sse))])


def _significant(a: np.ndarray, b: np.ndarray) -> float:
    if np.var(a) == 0 and np.var(b) == 0:
        return 0.0 if np.mean(a) != np.mean(b) else 1.0
    return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def detect_steps(values: Sequence[float], *, min_size: int = 3, floor: float = 0.05,
                 alpha: float = 0.01) -> list[Step]:
    """Level changes in ``values`` (oldest first), in order of position.

    ``floor`` is the smallest relative change of the medians worth reporting
    (0.05 = 5 %); NaN values are not allowed.
    """
    v = np.asarray(values, dtype=float)
    if np.isnan(v).any():
        raise ValueError("values contain NaN")
    found: list[Step] = []

    def segment(lo: int, hi: int) -> None:
        part = v[lo:hi]
        k = _best_split(part, min_size)
        if k is None:
            return
        a, b = part[:k], part[k:]
        before, after = float(np.median(a)), float(np.median(b))
        change = (after - before) / abs(before) if before else (0.0 if after == before else np.inf)
        p = _significant(a, b)
        if abs(change) <= floor or p > alpha:
            return
        found.append(Step(lo + k, before, after, float(change), p))
        segment(lo, lo + k)
        segment(lo + k, hi)

    segment(0, len(v))
    steps = sorted(found, key=lambda s: s.index)
    # Medians of the final segments, so each step reports its neighbours, not its parent split.
    bounds = [0] + [s.index for s in steps] + [len(v)]
    out = []
    for i, s in enumerate(steps):
        before = float(np.median(v[bounds[i]:bounds[i + 1]]))
        after = float(np.median(v[bounds[i + 1]:bounds[i + 2]]))
        change = (after - before) / abs(before) if before else s.change
        out.append(Step(s.index, before, after, float(change), s.p_value))
    return out
