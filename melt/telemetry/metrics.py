"""Job metrics from a trace and its phases: pure, no device needed.

Names and units follow docs/results-format.md. A metric that cannot be
measured is left out and :func:`job_metrics` says why in ``missing``
(``{"energy_decode_j": "no battery fuel gauge on this device"}``), never a zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from melt.telemetry.energy import WindowError, cumulative_between, integrate, mean_over
from melt.telemetry.uncertainty import (
    Estimate,
    Readings,
    gauge_energy,
    gauge_readings,
    noise_from_differences,
    noise_sd_w,
)
from melt.telemetry.phases import Phase, PhasePlan
from melt.telemetry.throttle import Interval, throttle_signal, throttled_intervals

ENERGY_PHASES = ("prefill", "decode")


#: how far a phase edge may be misplaced, by where it came from (seconds)
EDGE_S = {"marks": 0.001, "process-marks": 0.001, "llama-bench-samples": 0.005, "timings-at-exit": 0.02}


@dataclass(frozen=True)
class GaugeInfo:
    """What the device config says about a power sensor (None: estimate from the trace).

    A fuel gauge's readings are samples (``averaging_s`` 0) or means of the
    last ``averaging_s`` seconds. ``averaging_s=None`` says each reading is the
    mean over one refresh, as an INA3221 rail monitor's is (see
    :func:`rail_gauge`); the refresh is then ``update_period_s`` or what the
    trace shows. ``quantum_w`` (one step of the reading, in watts) overrides the
    one worked out from ``current_unit`` and the trace's ``voltage_uv``.
    """

    update_period_s: float | None = None
    averaging_s: float | None = 0.0
    gain_error_pct: float = 1.0
    current_unit: str | None = "uA"
    quantum_w: float | None = None


#: accuracy assumed for on-board rail monitors (INA3221 and the like): their gain error is
#: about 0.25%, the shunt resistors' tolerance (1%) dominates; boards are not calibrated
RAIL_GAIN_PCT = 1.0


def rail_gauge(refresh_s: float | None, quantum_w: float = 0.0) -> GaugeInfo:
    """The error-model inputs of a rail monitor: each reading the mean of one refresh.

    ``refresh_s`` is the sensor's effective refresh from the device config
    (``telemetry.rails[].refresh_ms``), None to take it from the trace;
    ``quantum_w`` one step of its reading (:func:`rail_quantum_w`).
    """
    return GaugeInfo(update_period_s=refresh_s, averaging_s=None, gain_error_pct=RAIL_GAIN_PCT,
                     current_unit=None, quantum_w=quantum_w)


def rail_quantum_w(frame: pd.DataFrame, stems: tuple[str, ...] | list[str]) -> float:
    """One step of the summed power of rails ``stems`` (W): hwmon counts whole mA at each bus voltage."""
    total = 0.0
    for stem in stems:
        col = f"{stem}_v"
        if col in frame.columns and frame[col].notna().any():
            total += 1e-3 * float(np.nanmedian(frame[col]))
    return total


@dataclass
class MetricsResult:
    metrics: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    throttled_intervals: list[Interval] = field(default_factory=list)
    resolution: dict[str, str] = field(default_factory=dict)  # phase -> "below"
    gauge: dict[str, Any] = field(default_factory=dict)  # the error model's inputs, for provenance


def _series(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    sub = frame[["t_s", column]].dropna()
    return sub["t_s"].to_numpy(dtype=float), sub[column].to_numpy(dtype=float)


def _estimator(out: MetricsResult | None, frame: pd.DataFrame, column: str, key_column: str | None,
               gauge: GaugeInfo, idle: list[Phase]) -> Callable[[float, float, float], Estimate]:
    """``estimate(start, end, edge_s)`` of the energy in ``column`` by the gauge model.

    Fuel gauges and rail monitors go through the same estimator
    (:func:`melt.telemetry.uncertainty.gauge_energy`): their readings refresh
    on the sensor's clock and each describes a stretch of time before it, so
    one model of blocks, edges, noise and gain covers both; only its inputs
    differ (:class:`GaugeInfo`). Those inputs go to ``out.gauge`` when given.
    """
    if key_column is not None and key_column in frame.columns:
        sub = frame[["t_s", column, key_column]].dropna()
        t, p, key = (sub[c].to_numpy(dtype=float) for c in ("t_s", column, key_column))
    else:
        t, p = _series(frame, column)
        key = None
    info: dict[str, Any] = {}
    try:
        readings: Readings | None = gauge_readings(t, p, key)
    except WindowError as exc:
        readings = None
        info["readings"] = str(exc)
    period = averaging = noise = quantum = 0.0
    if readings is not None:
        period = gauge.update_period_s or readings.period_s
        if gauge.averaging_s is None:  # a rail monitor: each reading the mean of one refresh
            averaging = period
            # read more slowly than it refreshes, a reading is a sample of the last refresh
            period = max(period, float(np.median(np.diff(t))))
        else:
            averaging = gauge.averaging_s
        found = noise_sd_w(readings, idle[0].start_s, idle[0].end_s) if idle else None
        noise = found if found is not None else noise_from_differences(readings)
        if gauge.quantum_w is not None:
            quantum = gauge.quantum_w
        else:
            volts = float(np.nanmedian(frame["voltage_uv"])) * 1e-6 if "voltage_uv" in frame.columns else 0.0
            quantum = {"mA": 1e-3, "uA": 1e-6}.get(gauge.current_unit or "uA", 0.0) * volts
        info.update({"update_period_s": round(period, 4),
                     "period_from": "config" if gauge.update_period_s else "trace",
                     "averaging_s": round(averaging, 4), "noise_w": round(noise, 6),
                     "noise_from": "idle baseline" if found is not None else "successive readings",
                     "quantum_w": quantum, "gain_error_pct": gauge.gain_error_pct,
                     "refreshes": int(readings.t_s.size)})
    if out is not None:
        out.gauge.update(info)

    def estimate(a: float, b: float, edge_s: float) -> Estimate:
        if readings is None:  # a sensor that never changed: plain integral, bound by its gain
            value = integrate(t, p, a, b)
            return Estimate(value, abs(gauge.gain_error_pct) / 100 * abs(value), 0.0, False)
        return gauge_energy(readings, a, b, period_s=period, averaging_s=averaging,
                            noise_w=noise, quantum_w=quantum, gain_pct=gauge.gain_error_pct,
                            edge_s=edge_s)

    return estimate


def _energy_metrics(out: MetricsResult, frame: pd.DataFrame, plan: PhasePlan,
                    window: tuple[float, float], gauge: GaugeInfo,
                    idle_power: tuple[float, float] | None = None) -> None:
    """Energy per phase (gross, net, per token), each with its ``_u95``; see the module doc."""
    m, missing = out.metrics, out.missing
    start, end = window
    phases = plan.phases
    idle = [ph for ph in phases if ph.name == "idle" and ph.duration_s > 0]
    estimate = _estimator(out, frame, "power_w", "current_ua", gauge, idle)
    try:
        avg = estimate(start, end, EDGE_S["marks"]).scaled(1.0 / (end - start)) if end > start else None
        if avg is not None:
            m["avg_power_w"], m["avg_power_w_u95"] = avg.value, avg.u95
    except WindowError as exc:
        missing["avg_power_w"] = str(exc)
    idle_w: Estimate | None = None
    if idle:
        try:
            idle_w = estimate(idle[0].start_s, idle[0].end_s, EDGE_S["marks"]).scaled(1.0 / idle[0].duration_s)
            m["idle_power_w"], m["idle_power_w_u95"] = idle_w.value, idle_w.u95
        except WindowError as exc:
            missing["idle_power_w"] = str(exc)
    elif idle_power is not None:  # measured in an earlier job (provenance.idle_baseline)
        idle_w = Estimate(float(idle_power[0]), float(idle_power[1]))
        m["idle_power_w"], m["idle_power_w_u95"] = idle_w.value, idle_w.u95
    else:
        missing["idle_power_w"] = "no idle baseline was sampled (telemetry.idle_s is 0)"
    # a job of one unmarked process that says how many tokens it ran (a quality
    # job) gets the energy of that whole run, per evaluated token
    whole_run = ("run",) if "run" in plan.tokens and any(ph.name == "run" for ph in phases) else ()
    for name in ENERGY_PHASES + whole_run:
        chosen = [ph for ph in phases if ph.name == name]
        if not chosen:
            missing[f"energy_{name}_j"] = f"the job has no {name} phase"
            continue
        try:
            total = Estimate(0.0)
            for ph in chosen:
                total = total + estimate(ph.start_s, ph.end_s, EDGE_S.get(ph.source, 0.02))
        except WindowError as exc:
            missing[f"energy_{name}_j"] = str(exc)
            continue
        duration = sum(ph.duration_s for ph in chosen)
        m[f"energy_{name}_j"], m[f"energy_{name}_j_u95"] = total.value, total.u95
        if total.below:
            out.resolution[name] = "below"
        tokens = plan.tokens.get(name)
        if tokens:
            m[f"energy_per_token_{name}_j"] = total.value / tokens
            m[f"energy_per_token_{name}_j_u95"] = total.u95 / tokens
        else:
            missing[f"energy_per_token_{name}_j"] = f"token count of the {name} phase unknown"
        if idle_w is not None:
            # the gain scales gross and idle alike: it bounds the net value, not both terms
            gain = abs(gauge.gain_error_pct) / 100.0
            idle_part = idle_w.scaled(duration)
            net_value = total.value - idle_part.value
            bound = (total.bound - gain * abs(total.value)) + (idle_part.bound - gain * abs(idle_part.value))
            net = Estimate(net_value, max(0.0, bound) + gain * abs(net_value),
                           float(np.hypot(total.sd, idle_part.sd)), total.below)
            m[f"energy_{name}_j_net"], m[f"energy_{name}_j_net_u95"] = net.value, net.u95
            if tokens:
                m[f"energy_per_token_{name}_j_net"] = net.value / tokens
                m[f"energy_per_token_{name}_j_net_u95"] = net.u95 / tokens


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
                truth: tuple[np.ndarray, np.ndarray] | None = None,
                gauge: "GaugeInfo | None" = None,
                idle_power: tuple[float, float] | None = None,
                rail_refresh_ms: dict[str, float] | None = None) -> MetricsResult:
    """Every telemetry metric of one job.

    ``window`` is the job's inference window (first step start, last step
    end; t_s). ``truth`` is (t_s, cumulative joules) from a virtual device's
    physical model. Energies are gross; ``_net`` subtracts the idle baseline
    power times the phase's duration. Every energy carries ``<name>_u95``
    (the half-width of its 95% interval, :mod:`melt.telemetry.uncertainty`);
    a phase shorter than the gauge resolves is listed in ``resolution``.
    The idle baseline is the ``idle`` phase's mean power, else ``idle_power``
    (value and u95 of one measured in an earlier job). Each ``rail_<name>_w``
    column gets ``rail_<name>_energy_<phase>_j`` and its ``_u95`` from the
    same estimator as ``energy_*`` (:func:`rail_gauge`), with the rail's
    refresh from ``rail_refresh_ms`` (column stem -> ms) where the config gives it.
    """
    out = MetricsResult()
    m, missing = out.metrics, out.missing
    start, end = window
    phases = plan.phases

    if "power_w" in frame.columns and frame["power_w"].notna().sum() >= 2:
        _energy_metrics(out, frame, plan, window, gauge or GaugeInfo(), idle_power)
    else:
        reason = power_missing or "no power samples"
        for name in ("avg_power_w", *(f"energy_{n}_j" for n in ENERGY_PHASES)):
            missing[name] = reason

    idle = [ph for ph in phases if ph.name == "idle" and ph.duration_s > 0]
    for col in sorted(c for c in frame.columns if c.startswith("rail_") and c.endswith("_w")):
        if frame[col].notna().sum() < 2:
            continue
        stem = col[:-2]
        refresh_ms = (rail_refresh_ms or {}).get(stem)
        estimate = _estimator(None, frame, col, None, rail_gauge(refresh_ms / 1000.0 if refresh_ms else None,
                                                                 rail_quantum_w(frame, [stem])), idle)
        for name in ENERGY_PHASES:
            key = f"{stem}_energy_{name}_j"
            chosen = [ph for ph in phases if ph.name == name]
            if not chosen:
                continue
            try:
                total = Estimate(0.0)
                for ph in chosen:
                    total = total + estimate(ph.start_s, ph.end_s, EDGE_S.get(ph.source, 0.02))
            except WindowError as exc:
                missing[key] = str(exc)
                continue
            m[key], m[f"{key}_u95"] = total.value, total.u95

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

    drain = _battery_drain(frame)
    if drain:
        m.update(drain)
    else:
        missing["battery_drain_pct"] = "no battery level channel"

    peaks = []
    if "rss_bytes" in frame.columns and frame["rss_bytes"].notna().any():
        peaks.append(float(frame["rss_bytes"].max()))
    if peaks:
        m["peak_rss_bytes"] = max(peaks)
    else:
        missing["peak_rss_bytes"] = "the inference process was never sampled"

    signal = throttle_signal(frame)
    if signal is None:
        missing["throttled"] = ("the device exposes no throttling signal (no cpufreq caps, cooling "
                                "devices or frequencies under load)")
    else:
        out.throttled_intervals = throttled_intervals(frame, start_s=start, end_s=end,
                                                      reference=throttle_reference)
        m["throttled"] = 1 if out.throttled_intervals else 0
    return out


def _battery_drain(frame: pd.DataFrame) -> dict[str, float]:
    """``battery_drain_pct`` (and ``battery_drain_uah``) from the charge counter when the
    device has one (µAh resolution), else from the integer level."""
    out: dict[str, float] = {}
    if "charge_counter_uah" in frame.columns and frame["charge_counter_uah"].notna().sum() >= 2:
        _, counter = _series(frame, "charge_counter_uah")
        drained = float(counter[0] - counter[-1])
        out["battery_drain_uah"] = drained
        if "charge_full_uah" in frame.columns and frame["charge_full_uah"].notna().any():
            full = float(frame["charge_full_uah"].dropna().iloc[0])
            if full > 0:
                out["battery_drain_pct"] = 100.0 * drained / full
                return out
    if "battery_pct" in frame.columns and frame["battery_pct"].notna().sum() >= 1:
        _, level = _series(frame, "battery_pct")
        out["battery_drain_pct"] = float(level[0] - level[-1])
    return out


def clean_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Drop NaN/inf values (a metric that is not a number is missing, not stored)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and np.isfinite(v):
            out[k] = int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else float(v)
    return out
