"""Energy from sampled power: pure functions on arrays, no I/O.

Power is integrated with the trapezoid rule over the exact window of a phase.
The window's edges rarely fall on a sample, so the power at each edge is
linearly interpolated between the two samples around it and the partial
intervals are counted too: integrating ``[a, b]`` and then ``[b, c]`` gives
exactly the integral over ``[a, c]``.

Fuel gauges differ in units (µA or mA, µV or mV) and in sign (most report a
negative ``current_now`` while discharging, some a positive one);
:func:`discharge_current_a` and :func:`voltage_v` turn the raw numbers into
amperes that are positive while the battery powers the device, and volts.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

#: raw unit name -> factor to the SI unit
_CURRENT_FACTORS = {"uA": 1e-6, "mA": 1e-3, "A": 1.0}
_VOLTAGE_FACTORS = {"uV": 1e-6, "mV": 1e-3, "V": 1.0}
#: watts per unit of a power reading (rail files report uW, mW or W)
POWER_FACTORS_W = {"uW": 1e-6, "mW": 1e-3, "W": 1.0}
#: volts / amperes per unit of a rail's voltage / current reading
VOLTAGE_FACTORS_V = {"uV": 1e-6, "mV": 1e-3, "V": 1.0}
CURRENT_FACTORS_A = {"uA": 1e-6, "mA": 1e-3, "A": 1.0}


class WindowError(ValueError):
    """A window is empty, reversed, or not covered by the samples."""


def discharge_current_a(raw: Sequence[float] | np.ndarray, *, unit: str = "uA",
                        sign: str = "negative-discharging") -> np.ndarray:
    """Raw fuel-gauge currents -> amperes, positive while discharging.

    ``unit`` is ``uA``, ``mA`` or ``A``; ``sign`` is ``negative-discharging``
    (AOSP's convention: the gauge reports current *into* the battery) or
    ``positive-discharging``. Raises ``ValueError`` for an unknown unit or sign.
    """
    if unit not in _CURRENT_FACTORS:
        raise ValueError(f"unknown current unit {unit!r}; expected one of {sorted(_CURRENT_FACTORS)}")
    if sign not in ("negative-discharging", "positive-discharging"):
        raise ValueError(f"unknown current sign {sign!r}")
    factor = _CURRENT_FACTORS[unit] * (-1.0 if sign == "negative-discharging" else 1.0)
    return np.asarray(raw, dtype=float) * factor


def voltage_v(raw: Sequence[float] | np.ndarray, *, unit: str = "uV") -> np.ndarray:
    """Raw voltages (``uV``, ``mV`` or ``V``) -> volts."""
    if unit not in _VOLTAGE_FACTORS:
        raise ValueError(f"unknown voltage unit {unit!r}; expected one of {sorted(_VOLTAGE_FACTORS)}")
    return np.asarray(raw, dtype=float) * _VOLTAGE_FACTORS[unit]


def guess_current_unit(raw: Iterable[float]) -> str:
    """``uA`` or ``mA`` from magnitudes, for gauges whose config does not say.

    A phone that is awake draws well over 20 mA, so a median magnitude under
    20 000 is read as mA (the rule the ``dumpsys battery`` parser uses too).
    """
    values = np.abs(np.asarray(list(raw), dtype=float))
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return "uA"
    return "mA" if float(np.median(values)) < 20000 else "uA"


def _clean(t: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.shape != y.shape:
        raise ValueError(f"times and values differ in length ({t.size} vs {y.size})")
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    if t.size > 1:  # repeated timestamps: keep the last reading
        last = np.append(t[1:] != t[:-1], True)
        t, y = t[last], y[last]
    return t, y


def value_at(t: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, x: float) -> float:
    """``y`` linearly interpolated at time ``x`` (NaN samples skipped).

    Raises :class:`WindowError` when ``x`` lies outside the sampled span.
    """
    t, y = _clean(t, y)
    if t.size == 0 or x < t[0] or x > t[-1]:
        raise WindowError(f"time {x:.6f} s is outside the samples")
    return float(np.interp(x, t, y))


def integrate(t: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
              start: float, end: float) -> float:
    """Trapezoid integral of ``y`` over ``[start, end]`` (same time unit as ``t``).

    Samples with a NaN time or value are skipped. The values at ``start`` and
    ``end`` are interpolated linearly between their neighbouring samples.
    Raises :class:`WindowError` when ``end < start`` or when the samples do
    not cover the window (no extrapolation: a missing edge is not guessed).
    """
    if not (np.isfinite(start) and np.isfinite(end)) or end < start:
        raise WindowError(f"bad window [{start}, {end}]")
    t, y = _clean(t, y)
    if t.size < 2 or start < t[0] or end > t[-1]:
        span = f"[{t[0]:.6f}, {t[-1]:.6f}]" if t.size else "no samples"
        raise WindowError(f"window [{start:.6f}, {end:.6f}] is not covered by the samples ({span})")
    if end == start:
        return 0.0
    inside = (t > start) & (t < end)
    tt = np.concatenate(([start], t[inside], [end]))
    yy = np.concatenate(([np.interp(start, t, y)], y[inside], [np.interp(end, t, y)]))
    return float(np.sum((tt[1:] - tt[:-1]) * (yy[1:] + yy[:-1]) / 2.0))


def mean_over(t: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
              start: float, end: float) -> float:
    """Time-weighted mean of ``y`` over ``[start, end]`` (see :func:`integrate`)."""
    if end <= start:
        raise WindowError(f"empty window [{start}, {end}]")
    return integrate(t, y, start, end) / (end - start)


def cumulative_between(t: Sequence[float] | np.ndarray, counter: Sequence[float] | np.ndarray,
                       start: float, end: float) -> float:
    """Increase of a cumulative counter (an energy meter) over ``[start, end]``.

    The counter is interpolated linearly at both edges; used for the virtual
    phone's truth log, ODPM energy counters and any other running total.
    Raises :class:`WindowError` when the readings do not cover the window.
    """
    t, c = _clean(t, counter)
    if t.size < 2 or start < t[0] or end > t[-1] or end < start:
        raise WindowError(f"window [{start:.6f}, {end:.6f}] is not covered by the counter readings")
    return float(np.interp(end, t, c) - np.interp(start, t, c))
