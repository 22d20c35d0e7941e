"""Energy with a 95% interval: what a fuel gauge, a counter or a monitor can resolve.

Pure functions on arrays, no I/O. docs/measurement.md explains the model;
in short, a fuel gauge's reading changes only when the gauge refreshes
(every ``U`` seconds) and each reading is the mean current of the last ``A``
seconds (``A = 0``: the instantaneous value). The sampler sees each refresh
as a step in ``current_now``; melt rebuilds the power as blocks of width
``U`` centred ``A/2`` before each refresh and integrates those. What limits
the result:

- **edges**: the block that holds a window's edge is known only as a whole.
  The share inside the window is bounded by the neighbouring readings
  (power inside a block lies between the lowest and highest of the block
  and its neighbours); the estimate is the middle of that bound, the
  half-width its error (a hard bound, added linearly);
- **noise**: the scatter of the readings over the idle baseline (constant
  power), 1 sigma per reading, ``sigma * U * sqrt(n)`` over ``n`` blocks;
- **quantization**: one unit of the gauge (1 mA or 1 µA) times the voltage,
  ``q / sqrt(12)`` per reading;
- **interior**: with ``A < U`` a reading is a sample, not the block's mean;
  the block's spread against its neighbours counts as random, ``/ sqrt(12)``;
- **gain**: the gauge's declared accuracy (``telemetry.battery.gain_error_pct``),
  a bound proportional to the value;
- **edge placement**: where a phase's edges came from (marks: sub-ms;
  llama.cpp's timings at exit: tens of ms) times the power range there.

``u95 = bounds + 1.96 * sqrt(sum of random variances)``. A window shorter
than ``2 * max(U, A)`` is ``resolution: below``: its value is reported with
its (wide) interval, never as precise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from melt.telemetry.energy import WindowError

Z95 = 1.96


@dataclass(frozen=True)
class Estimate:
    """A value with what limits it (same unit): ``u95 = bound + 1.96 * sd``."""

    value: float
    bound: float = 0.0  # hard limits, added linearly (edges, gain)
    sd: float = 0.0  # random part, 1 sigma
    below: bool = False  # the window is shorter than the sensor can resolve

    @property
    def u95(self) -> float:
        return self.bound + Z95 * self.sd

    def __add__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.value + other.value, self.bound + other.bound,
                        math.hypot(self.sd, other.sd), self.below or other.below)

    def scaled(self, factor: float) -> "Estimate":
        f = abs(factor)
        return Estimate(self.value * factor, self.bound * f, self.sd * f, self.below)


@dataclass(frozen=True)
class Readings:
    """The gauge's refreshes seen in a trace: when, what, how well placed."""

    t_s: np.ndarray  # refresh instants (mid-way between the samples around a change); [0]: first sample
    power_w: np.ndarray
    placement_s: np.ndarray  # half the sampling gap around each refresh
    period_s: float  # typical time between refreshes (10th percentile of the changes' spacing)
    last_sample_s: float  # the last sample: the last reading held at least until then


def gauge_readings(t: np.ndarray, power: np.ndarray, key: np.ndarray | None = None) -> Readings:
    """The refreshes in a sampled gauge trace.

    A refresh is a sample whose ``key`` (the raw current; default the power)
    differs from the previous sample's; the first sample counts as one too. A
    gauge that refreshes with an unchanged value is seen as one longer
    reading, which is what it is. Raises :class:`WindowError` with fewer than
    two changes (the period cannot be told).
    """
    t = np.asarray(t, dtype=float)
    p = np.asarray(power, dtype=float)
    k = p if key is None else np.asarray(key, dtype=float)
    ok = np.isfinite(t) & np.isfinite(p) & np.isfinite(k)
    t, p, k = t[ok], p[ok], k[ok]
    if t.size < 3:
        raise WindowError("too few gauge samples")
    change = np.flatnonzero(k[1:] != k[:-1]) + 1
    if change.size < 2:
        raise WindowError("the fuel gauge never refreshed during the job")
    tr = (t[change] + t[change - 1]) / 2.0
    placement = (t[change] - t[change - 1]) / 2.0
    period = float(np.percentile(np.diff(tr), 10))
    return Readings(np.concatenate(([t[0]], tr)), np.concatenate(([p[0]], p[change])),
                    np.concatenate(([0.0], placement)), period, float(t[-1]))


def _blocks(r: Readings, period_s: float, averaging_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Block edges (n+1) and values (n) of the rebuilt power.

    A reading latched at ``t_k`` holds until the next one; it describes the
    power ``(U + A) / 2`` earlier, so the hold intervals move back by that.
    A hold longer than ``U`` is a run of equal readings: it is cut into
    blocks of ``U`` (ending at the next change), so an edge inside it is
    bounded by equal neighbours.
    """
    shift = (period_s + averaging_s) / 2.0
    starts = list(r.t_s - shift)
    ends = starts[1:] + [r.last_sample_s - shift]
    edges: list[float] = []
    values: list[float] = []
    for k, (a, b) in enumerate(zip(starts, ends)):
        cuts = [b]
        while cuts[-1] - period_s > a + 1e-9 and len(cuts) < 100000:
            cuts.append(cuts[-1] - period_s)
        cuts.append(a)
        cuts.reverse()
        for lo in cuts[:-1]:
            edges.append(lo)
            values.append(float(r.power_w[k]))
    edges.append(ends[-1])
    return np.asarray(edges), np.asarray(values)


def noise_sd_w(r: Readings, start: float, end: float) -> float | None:
    """1-sigma scatter of the readings refreshed inside ``[start, end]`` (an idle baseline)."""
    inside = r.power_w[(r.t_s >= start) & (r.t_s <= end)]
    if inside.size < 3:
        return None
    return float(np.std(inside, ddof=1))


def noise_from_differences(r: Readings) -> float:
    """Fallback noise: the robust scatter of successive differences (counts load changes too)."""
    d = np.diff(r.power_w)
    if d.size == 0:
        return 0.0
    mad = float(np.median(np.abs(d - np.median(d))))
    return mad / 0.6745 / math.sqrt(2.0)


def gauge_energy(r: Readings, start: float, end: float, *, period_s: float, averaging_s: float,
                 noise_w: float, quantum_w: float = 0.0, gain_pct: float = 0.0,
                 edge_s: float = 0.0) -> Estimate:
    """Energy (J) over ``[start, end]`` from gauge readings, with its interval.

    ``period_s`` and ``averaging_s`` describe the gauge (U and A); ``noise_w``
    is one reading's 1-sigma noise in watts; ``quantum_w`` one unit step of
    the gauge in watts; ``gain_pct`` its declared accuracy; ``edge_s`` how
    far each window edge may be misplaced. Raises :class:`WindowError` when the
    readings do not cover the window.
    """
    if not (np.isfinite(start) and np.isfinite(end)) or end < start:
        raise WindowError(f"bad window [{start}, {end}]")
    edges, values = _blocks(r, period_s, averaging_s)
    n = values.size
    value = bound = var = 0.0
    p_min, p_max = float(np.min(values)), float(np.max(values))
    # a window edge past the first or last reading: hold that reading, bounded by the job's range
    for gap, held in ((edges[0] - start, values[0]), (end - edges[-1], values[-1])):
        if gap > 0:
            if gap > 2 * period_s + averaging_s:
                raise WindowError(f"window [{start:.3f}, {end:.3f}] is not covered by the gauge's "
                                  f"readings ([{edges[0]:.3f}, {edges[-1]:.3f}])")
            span = min(gap, end - start)
            value += held * span
            bound += span * max(held - p_min, p_max - held)
    blocks = 0
    per_reading = noise_w * noise_w + quantum_w * quantum_w / 12.0
    interior = max(0.0, min(1.0, abs(period_s - averaging_s) / period_s))
    below = (end - start) < 2.0 * max(period_s, averaging_s)
    for k in range(n):
        lo, hi = edges[k], edges[k + 1]
        a, b = max(lo, start), min(hi, end)
        if b <= a:
            continue
        width = hi - lo
        near = values[max(0, k - 1): k + 2]
        p_lo, p_hi = float(np.min(near)), float(np.max(near))
        d_in, d_out = b - a, width - (b - a)
        if d_out > 1e-12:  # an edge block: the split between inside and outside is unknown
            e_k = values[k] * width
            if below and averaging_s >= 0.9 * period_s:  # may hide inside one averaged block
                low, high = p_min * d_in, max(p_min * d_in, e_k - p_min * d_out)
                mid, half = (low + high) / 2.0, (high - low) / 2.0
            elif below:  # the readings are samples: only the job's range bounds the slice
                low, high = p_min * d_in, p_max * d_in
                mid, half = (low + high) / 2.0, (high - low) / 2.0
            else:
                mid, half = _edge_split(values, k, width, d_in, start > lo, p_lo, p_hi,
                                        noise_w * width)
            value += mid
            bound += half
        else:
            value += values[k] * d_in
        var += per_reading * d_in ** 2
        var += (interior * (p_hi - p_lo) * d_in) ** 2 / 12.0
    bound += 2.0 * edge_s * (p_max - p_min) + abs(gain_pct) / 100.0 * abs(value)
    return Estimate(value, bound, math.sqrt(var), below)


def _edge_split(values: np.ndarray, k: int, width: float, d_in: float, starts_inside: bool,
                p_lo: float, p_hi: float, noise_j: float) -> tuple[float, float]:
    """(estimate, half-width) of the share of block ``k`` inside a window edge.

    Phases start and end where the load changes, so the block is read as a
    step at the edge: the neighbour inside the window on one side, the one
    outside on the other. What that leaves unexplained of the block's energy
    (the residual) is shared by time and is the estimate's error, with the
    noise of the three readings. The result never leaves the hard bound the
    neighbours set (power in the block lies between their lowest and highest).
    """
    d_out = width - d_in
    e_k = values[k] * width
    low = max(e_k - p_hi * d_out, p_lo * d_in)
    high = min(e_k - p_lo * d_out, p_hi * d_in)
    if high < low:
        low = high = values[k] * d_in
    inner = k + 1 if starts_inside else k - 1
    outer = k - 1 if starts_inside else k + 1
    if not (0 <= inner < values.size and 0 <= outer < values.size):
        return (low + high) / 2.0, (high - low) / 2.0
    p_in, p_out = values[inner], values[outer]
    residual = e_k - p_in * d_in - p_out * d_out
    est = p_in * d_in + residual * d_in / width
    half = abs(residual) * (1.0 - d_in / width) + abs(residual) * d_in / width + 2.0 * Z95 * noise_j
    a, b = max(low, est - half), min(high, est + half)
    if b < a:  # the step reading contradicts the bound: fall back to the bound
        return (low + high) / 2.0, (high - low) / 2.0
    return (a + b) / 2.0, (b - a) / 2.0


def counter_energy(c_start: float, c_end: float, stale_start_s: float, stale_end_s: float, *,
                   power_before_w: float, power_inside_w: float, p_max_w: float,
                   gain_pct: float = 0.0, resolution_j: float = 0.0) -> Estimate:
    """Energy (J) over a window from a cumulative counter read at both edges.

    The counters were last refreshed ``stale_*_s`` before each edge (negative:
    after it, so the slice is taken away instead of added). The
    missing slices are added (the end's, at the window's mean power) and
    removed (the start's, at the power before it); each slice's energy lies
    between 0 and ``p_max_w`` times its length, so half that range is its
    bound. ``resolution_j`` is the counter's unit; ``gain_pct`` its accuracy.
    """
    value = (c_end - c_start) + power_inside_w * stale_end_s - power_before_w * stale_start_s
    bound = p_max_w * (abs(stale_start_s) + abs(stale_end_s)) / 2.0 + 2 * resolution_j
    bound += abs(gain_pct) / 100.0 * abs(value)
    return Estimate(value, bound, 0.0, False)


def sampled_energy_bound(value: float, power_range_w: float, edge_s: float, *, gain_pct: float = 0.0,
                         sample_period_s: float = 0.0, duration_s: float = 0.0) -> Estimate:
    """Interval of energy integrated from a fast sampled monitor (Monsoon, rail files).

    The edges are placed within ``edge_s`` (clock offset, marks); each edge
    costs that times the power range. A window under two sample periods is below
    resolution.
    """
    bound = 2.0 * edge_s * power_range_w + abs(gain_pct) / 100.0 * abs(value)
    return Estimate(value, bound, 0.0, duration_s < 2.0 * sample_period_s)
