"""Throttling detected in a trace: frequency caps that drop, cooling that engages.

A sample is *throttled* when, compared with the first sample of the job:

- a core's frequency cap (``cpufreq_max_cpu<N>_khz``, what thermal
  frameworks lower) fell by more than ``cap_drop`` (default 5%) below the
  cap the core rested at (the first sample, or the health snapshot before
  the job): a policy cap below the hardware maximum is not throttling; or
- a compute cooling device's state (``cooling_<N>_state``; only CPU, GPU and
  accelerator cooling devices are sampled) rose; or
- the CPU was busy (``cpu_util_pct`` >= ``busy_pct``) yet the fastest core ran
  more than ``freq_drop`` (default 15%) below its highest frequency in the job
  (for devices that expose no cap).

Consecutive throttled samples make one interval; the thermal status from
the health snapshots before and after the job adds to the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Interval:
    start_s: float
    end_s: float

    def as_dict(self) -> dict[str, float]:
        return {"start_s": round(self.start_s, 6), "end_s": round(self.end_s, 6)}


def _first(series: pd.Series) -> float | None:
    values = series.dropna()
    return float(values.iloc[0]) if len(values) else None


def throttle_signal(frame: pd.DataFrame) -> str | None:
    """Which signal throttling can be read from, or None when the trace has none."""
    cols = frame.columns
    if any(c.startswith("cpufreq_max_cpu") and frame[c].notna().any() for c in cols):
        return "cpufreq caps"
    if any(c.startswith("cooling_") and frame[c].notna().any() for c in cols):
        return "cooling devices"
    if "cpu_util_pct" in cols and any(c.startswith("cpufreq_cpu") and frame[c].notna().any() for c in cols):
        return "frequencies under load"
    return None


def throttled_mask(frame: pd.DataFrame, *, cap_drop: float = 0.05, freq_drop: float = 0.15,
                   busy_pct: float = 90.0, reference: dict[str, float] | None = None) -> pd.Series:
    """Boolean per row of ``frame``: throttled at that sample (see module doc).

    ``reference`` maps a cap column to the cap the core rested at before the
    job (``scaling_max_freq`` in the health snapshot); a cap that drops between
    that snapshot and the first sample is then caught too.
    """
    mask = pd.Series(False, index=frame.index)
    caps = [c for c in frame.columns if c.startswith("cpufreq_max_cpu")]
    for col in caps:
        ref = max(filter(None, (_first(frame[col]), (reference or {}).get(col))), default=None)
        if ref:
            mask |= frame[col] < ref * (1.0 - cap_drop)
    for col in (c for c in frame.columns if c.startswith("cooling_") and c.endswith("_state")):
        ref = _first(frame[col])
        if ref is not None:
            mask |= frame[col] > ref
    freqs = [c for c in frame.columns if c.startswith("cpufreq_cpu")]
    if not caps and freqs and "cpu_util_pct" in frame.columns:
        fastest = frame[freqs].max(axis=1)
        top = fastest.max()
        if np.isfinite(top) and top > 0:
            mask |= (frame["cpu_util_pct"] >= busy_pct) & (fastest < top * (1.0 - freq_drop))
    return mask.fillna(False).astype(bool)


def throttled_intervals(frame: pd.DataFrame, *, start_s: float | None = None,
                        end_s: float | None = None, **kw: object) -> list[Interval]:
    """Intervals of consecutive throttled samples, within ``[start_s, end_s]`` when given.

    Slow channels are sampled every few ticks; an interval runs from the first
    throttled sample to the last one of its run.
    """
    cols = [c for c in frame.columns if c.startswith(("cpufreq_", "cooling_", "cpu_util_pct"))]
    if not cols:
        return []
    slow = frame.dropna(subset=cols, how="all")
    if start_s is not None:
        slow = slow[slow["t_s"] >= start_s]
    if end_s is not None:
        slow = slow[slow["t_s"] <= end_s]
    if slow.empty:
        return []
    mask = throttled_mask(slow, **kw).to_numpy()  # type: ignore[arg-type]
    t = slow["t_s"].to_numpy()
    out: list[Interval] = []
    i = 0
    while i < len(mask):
        if mask[i]:
            j = i
            while j + 1 < len(mask) and mask[j + 1]:
                j += 1
            out.append(Interval(float(t[i]), float(t[j])))
            i = j + 1
        else:
            i += 1
    return out
