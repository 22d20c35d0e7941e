"""Downsampling traces for display, keeping every peak and trough.

:func:`minmax_envelope` splits a trace into buckets of consecutive samples and
keeps, per channel, the minimum and the maximum of each bucket in the order
they occurred. The extremes of every channel survive exactly (a 200 ms power
spike still shows), which plain decimation or averaging would lose; the
cost is that a kept value is drawn at its bucket's first or last timestamp,
so its time is exact to within one bucket. The full data stays in the run
folder.

:func:`channel_line` draws one channel from its own readings. Slow channels
(temperatures, frequencies, battery, CPU use) are read every few sampler
ticks and hold NaN in between; a line through a shared time axis would break
at every NaN and show nothing. Each channel drops its missing ticks first and
is reduced on its own; its line breaks only where the channel really had no
reading for a long time (:data:`GAP_INTERVALS` of its usual intervals and at
least :data:`MIN_GAP_S`), so a sensor that stopped answering shows as a gap,
not as a straight line drawn across it.
"""

from __future__ import annotations

import math

import numpy as np


def buckets_for(n_samples: int, n_points: int) -> int:
    """How many buckets give at most ``n_points`` points (two per bucket)."""
    return max(1, min(n_samples, n_points // 2))


def minmax_envelope(t: np.ndarray, channels: dict[str, np.ndarray], n_points: int
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reduce a trace to at most ``n_points`` points per channel, sharing one time axis.

    ``t`` is in seconds, sorted; each channel has ``len(t)`` values (NaN for
    a missing sample). When the trace is already short enough it is returned
    unchanged. Per bucket the output has two points, at the bucket's first
    and last timestamp, holding each channel's min and max in the order they
    occurred; a bucket that is all NaN stays NaN.
    """
    t = np.asarray(t, dtype=float)
    n = len(t)
    if n <= n_points or n < 4:
        return t, {k: np.asarray(v, dtype=float) for k, v in channels.items()}
    nb = buckets_for(n, n_points)
    size = math.ceil(n / nb)
    nb = math.ceil(n / size)
    pad = nb * size - n
    starts = np.arange(nb) * size
    ends = np.minimum(starts + size, n) - 1
    t_out = np.empty(2 * nb)
    t_out[0::2], t_out[1::2] = t[starts], t[ends]
    out: dict[str, np.ndarray] = {}
    for name, values in channels.items():
        v = np.asarray(values, dtype=float)
        if pad:
            v = np.concatenate([v, np.full(pad, np.nan)])
        m = v.reshape(nb, size)
        nan = np.isnan(m)
        all_nan = nan.all(axis=1)
        i_min = np.argmin(np.where(nan, np.inf, m), axis=1)
        i_max = np.argmax(np.where(nan, -np.inf, m), axis=1)
        rows = np.arange(nb)
        lo, hi = m[rows, i_min], m[rows, i_max]
        first_is_min = i_min <= i_max
        y = np.empty(2 * nb)
        y[0::2] = np.where(first_is_min, lo, hi)
        y[1::2] = np.where(first_is_min, hi, lo)
        y[0::2][all_nan] = np.nan
        y[1::2][all_nan] = np.nan
        out[name] = y
    return t_out, out


#: A channel's line breaks where it had no reading for this many of its usual
#: (median) intervals between readings ...
GAP_INTERVALS = 10
#: ... and for at least this long, in seconds (a busy sampler may skip a few ticks).
MIN_GAP_S = 1.0


def channel_line(t: np.ndarray, values: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """One channel's own readings, reduced to about ``n_points`` points for drawing.

    ``t`` (seconds) and ``values`` are the trace's columns, NaN where the
    channel was not read at that tick. Returns ``(t, y, lone)``: the
    readings' times and values (min/max envelope per segment when there are
    more than ``n_points``), with one NaN between segments where the channel
    had no reading for longer than ``max(GAP_INTERVALS x its median
    interval, MIN_GAP_S)``. ``lone`` is True when a segment holds a single
    reading (a line cannot show it: draw markers too). Empty arrays when the
    channel has no reading.
    """
    x, ys, lone = shared_lines(t, {"v": values}, n_points)
    return x, ys["v"], lone


def shared_lines(t: np.ndarray, channels: dict[str, np.ndarray], n_points: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], bool]:
    """:func:`channel_line` for channels read at the same ticks (finite in the same rows,
    as the first one is), done once for all of them: they share the returned times."""
    t = np.asarray(t, dtype=float)
    values = {k: np.asarray(v, dtype=float) for k, v in channels.items()}
    ok = np.isfinite(t) & np.isfinite(next(iter(values.values())))
    t = t[ok]
    values = {k: v[ok] for k, v in values.items()}
    n = len(t)
    if n < 2:
        return t, values, n == 1
    dt = np.diff(t)
    if np.any(dt < 0):
        order = np.argsort(t, kind="stable")
        t, values = t[order], {k: v[order] for k, v in values.items()}
        dt = np.diff(t)
    limit = max(GAP_INTERVALS * float(np.median(dt)), MIN_GAP_S)
    cuts = np.flatnonzero(dt > limit)
    max_cuts = max(0, n_points // 4 - 1)
    if len(cuts) > max_cuts:  # a sensor failing over and over: keep the longest gaps only
        cuts = np.sort(cuts[np.argsort(dt[cuts], kind="stable")[len(cuts) - max_cuts:]])
    bounds = [0, *(int(c) + 1 for c in cuts), n]
    xs: list[np.ndarray] = []
    ys: dict[str, list[np.ndarray]] = {k: [] for k in values}
    lone = False
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        lone |= hi - lo == 1
        budget = max(2, int(n_points * (hi - lo) / n))
        ts, out = minmax_envelope(t[lo:hi], {k: v[lo:hi] for k, v in values.items()}, budget)
        if xs:
            xs.append(np.array([(xs[-1][-1] + ts[0]) / 2]))
            for k in ys:
                ys[k].append(np.array([np.nan]))
        xs.append(ts)
        for k in ys:
            ys[k].append(out[k])
    return np.concatenate(xs), {k: np.concatenate(v) for k, v in ys.items()}, lone


def lttb(x: np.ndarray, y: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest-Triangle-Three-Buckets: ``n_out`` points that keep a line's visual shape.

    Used where one series is drawn on its own; it does not guarantee that
    every extreme survives (use :func:`minmax_envelope` for that).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n_out >= n or n_out < 3:
        return x, y
    edges = np.linspace(1, n - 1, n_out - 1).astype(int)
    keep = [0]
    for b in range(n_out - 2):
        lo, hi = edges[b], max(edges[b + 1], edges[b] + 1)
        nxt_lo, nxt_hi = edges[b + 1], (edges[b + 2] if b + 2 < len(edges) else n)
        ax, ay = x[keep[-1]], y[keep[-1]]
        cx = x[nxt_lo:max(nxt_hi, nxt_lo + 1)].mean()
        cy = np.nanmean(y[nxt_lo:max(nxt_hi, nxt_lo + 1)])
        area = np.abs((ax - cx) * (y[lo:hi] - ay) - (ax - x[lo:hi]) * (cy - ay))
        keep.append(lo + int(np.nanargmax(area)) if np.isfinite(area).any() else lo)
    keep.append(n - 1)
    idx = np.asarray(keep)
    return x[idx], y[idx]
