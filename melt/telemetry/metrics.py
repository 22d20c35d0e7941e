"""Job metrics from a trace and its phases: pure, no device needed.

Names and units follow docs/results-format.md. A metric that cannot be
measured is left out and :func:`job_metrics` says why in ``missing``
(``{"energy_decode_j": "no battery fuel gauge on this device"}``), never a zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from melt.telemetry.energy import WindowError, cumulative_between, integrate, mean_over
from melt.telemetry.phases import Phase, PhasePlan
from melt.telemetry.throttle import Interval, throttled_intervals

ENERGY_PHASES = ("prefill", "decode")


@dataclass
class MetricsResult:
    metrics: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    throttled_intervals: list[Interval] = field(default_factory=list)


def _series(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    sub = frame[["t_s", column]].dropna()
    return sub["t_s"].to_numpy(dtype=float), sub[column].to_numpy(dtype=float)


def _phase_sum(phases: list[Phase], name: str, t: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(integral, total duration) over every phase called ``name``."""
    chosen = [p for p in phases if p.name == name]
    if not chosen:
        return None
    return (sum(integrate(t, y, p.start_s, p.end_s) for p in chosen),
            sum(p.duration_s for p in chosen))


def temperature_column(frame: pd.DataFrame, skin_zone: str | None) -> str | None:
    """The column the temp_* metrics follow: the skin zone, else the battery, else the first zone."""
    from melt.telemetry.channels import column_name

    if skin_zone:
        col = f"temp_{column_name(skin_zone)}_c"
        if col in frame.columns:
            return col
    if "battery_temp_c" in frame.columns and frame["battery_temp_c"].notna().any():
        return "battery_temp_c"
    zones = [c for c in frame.columns if c.startswith("temp_") and frame[c].notna().any()]
    return zones[0] if zones else None


def job_metrics(frame: pd.DataFrame, plan: PhasePlan, window: tuple[float, float], *,
                power_missing: str | None = None, skin_zone: str | None = None,
                throttle_reference: dict[str, float] | None = None,
                truth: tuple[np.ndarray, np.ndarray] | None = None) -> MetricsResult:
    """Every telemetry metric of one job.

    ``window`` is the job's inference window (first step start, last step
    end; t_s). ``truth`` is (t_s, cumulative joules) from a virtual device's
    physical model. Energies are gross; ``_net`` subtracts the idle baseline
    power times the phase's duration.
    """
    out = MetricsResult()
    m, missing = out.metrics, out.missing
    start, end = window
    phases = plan.phases

    if "power_w" in frame.columns and frame["power_w"].notna().sum() >= 2:
        t, p = _series(frame, "power_w")
        try:
            m["avg_power_w"] = mean_over(t, p, start, end)
        except WindowError as exc:
            missing["avg_power_w"] = str(exc)
        idle = [ph for ph in phases if ph.name == "idle" and ph.duration_s > 0]
        idle_w: float | None = None
        if idle:
            try:
                idle_w = mean_over(t, p, idle[0].start_s, idle[0].end_s)
                m["idle_power_w"] = idle_w
            except WindowError as exc:
                missing["idle_power_w"] = str(exc)
        else:
            missing["idle_power_w"] = "no idle baseline was sampled (telemetry.idle_s is 0)"
        for name in ENERGY_PHASES:
            try:
                found = _phase_sum(phases, name, t, p)
            except WindowError as exc:
                missing[f"energy_{name}_j"] = str(exc)
                continue
            if found is None:
                missing[f"energy_{name}_j"] = f"the job has no {name} phase"
                continue
            energy, duration = found
            m[f"energy_{name}_j"] = energy
            tokens = plan.tokens.get(name)
            if tokens:
                m[f"energy_per_token_{name}_j"] = energy / tokens
            else:
                missing[f"energy_per_token_{name}_j"] = f"token count of the {name} phase unknown"
            if idle_w is not None:
                net = energy - idle_w * duration
                m[f"energy_{name}_j_net"] = net
                if tokens:
                    m[f"energy_per_token_{name}_j_net"] = net / tokens
    else:
        reason = power_missing or "no power samples"
        for name in ("avg_power_w", *(f"energy_{n}_j" for n in ENERGY_PHASES)):
            missing[name] = reason

    for col in sorted(c for c in frame.columns if c.startswith("rail_") and c.endswith("_w")):
        if frame[col].notna().sum() < 2:
            continue
        t, p = _series(frame, col)
        for name in ENERGY_PHASES:
            key = f"{col[:-2]}_energy_{name}_j"
            try:
                found = _phase_sum(phases, name, t, p)
            except WindowError as exc:
                missing[key] = str(exc)
                continue
            if found is not None:
                m[key] = found[0]

    if truth is not None:
        tt, cum = truth
        for name in ENERGY_PHASES:
            chosen = [ph for ph in phases if ph.name == name]
            if not chosen:
                continue
            try:
                m[f"true_energy_{name}_j"] = sum(cumulative_between(tt, cum, ph.start_s, ph.end_s)
                                                 for ph in chosen)
            except WindowError as exc:
                missing[f"true_energy_{name}_j"] = str(exc)

    temp_col = temperature_column(frame, skin_zone)
    if temp_col:
        t, y = _series(frame, temp_col)
        inside = (t >= start) & (t <= end)
        before, after = y[t <= start], y[t >= end]
        within = y[inside]
        if within.size or before.size or after.size:
            # the nearest reading at or before the start, and at or after the end
            first = before[-1] if before.size else (within[0] if within.size else after[0])
            last = after[0] if after.size else (within[-1] if within.size else before[-1])
            m["temp_start_c"], m["temp_end_c"] = float(first), float(last)
            pool = np.concatenate((within, [m["temp_start_c"], m["temp_end_c"]]))
            m["temp_max_c"] = float(np.max(pool))
    else:
        missing["temp_max_c"] = "no temperature channel"

    if "battery_pct" in frame.columns and frame["battery_pct"].notna().sum() >= 1:
        _, level = _series(frame, "battery_pct")
        m["battery_drain_pct"] = float(level[0] - level[-1])
    else:
        missing["battery_drain_pct"] = "no battery level channel"

    peaks = []
    if "rss_bytes" in frame.columns and frame["rss_bytes"].notna().any():
        peaks.append(float(frame["rss_bytes"].max()))
    if peaks:
        m["peak_rss_bytes"] = max(peaks)
    else:
        missing["peak_rss_bytes"] = "the inference process was never sampled"

    out.throttled_intervals = throttled_intervals(frame, start_s=start, end_s=end,
                                                  reference=throttle_reference)
    m["throttled"] = 1 if out.throttled_intervals else 0
    return out


def clean_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Drop NaN/inf values (a metric that is not a number is missing, not stored)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and np.isfinite(v):
            out[k] = int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else float(v)
    return out
