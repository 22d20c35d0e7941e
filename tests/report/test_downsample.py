from __future__ import annotations

import numpy as np

from melt.report.downsample import channel_line, lttb, minmax_envelope


def test_minmax_keeps_every_extreme_and_bounds_points():
    rng = np.random.default_rng(0)
    t = np.arange(100_003) / 1000.0
    power = rng.normal(4, 0.2, len(t))
    power[31_337] = 25.0  # a one-sample spike
    power[77_000] = -1.0
    temp = np.linspace(30, 45, len(t))
    temp[5:10] = np.nan
    t2, out = minmax_envelope(t, {"power_w": power, "temp_c": temp}, 400)
    assert len(t2) <= 400 and all(len(v) == len(t2) for v in out.values())
    assert out["power_w"].max() == 25.0 and out["power_w"].min() == -1.0
    assert np.nanmax(out["temp_c"]) == np.nanmax(temp) and np.nanmin(out["temp_c"]) == np.nanmin(temp)
    assert np.all(np.diff(t2) >= 0) and t2[0] == t[0] and t2[-1] == t[-1]
    # the spike is drawn within one bucket of where it happened
    bucket_s = (t[-1] - t[0]) / (len(t2) / 2)
    assert abs(t2[int(np.argmax(out["power_w"]))] - t[31_337]) <= bucket_s


def test_minmax_short_traces_unchanged_and_all_nan_buckets():
    t = np.arange(10.0)
    t2, out = minmax_envelope(t, {"a": t * 2}, 100)
    assert np.array_equal(t2, t) and np.array_equal(out["a"], t * 2)
    v = np.full(1000, np.nan)
    v[:10] = 1.0
    _, out = minmax_envelope(np.arange(1000.0), {"a": v}, 20)
    assert np.isnan(out["a"][-1]) and out["a"][0] == 1.0


def test_lttb_keeps_ends_and_count():
    x = np.arange(5000.0)
    y = np.sin(x / 100)
    xs, ys = lttb(x, y, 200)
    assert len(xs) == 200 and xs[0] == 0 and xs[-1] == 4999
    assert np.all(np.diff(xs) > 0)


def test_channel_line_draws_a_slow_channel_from_its_own_readings():
    t = np.arange(10_000) * 0.02  # 50 Hz ticks
    temp = np.full(len(t), np.nan)
    temp[::5] = 30 + t[::5] / 10  # read every fifth tick, NaN between
    x, y, lone = channel_line(t, temp, 400)
    assert not np.isnan(y).any() and not lone  # one unbroken line
    assert len(x) <= 400 and x[0] == 0.0 and x[-1] == t[::5][-1]
    assert y.min() == np.nanmin(temp) and y.max() == np.nanmax(temp)
    x, y, _ = channel_line(t[:100], temp[:100], 400)  # short: every reading kept, none of the NaN
    assert np.array_equal(x, t[:100:5]) and np.array_equal(y, temp[:100:5])


def test_channel_line_breaks_only_where_the_channel_went_silent():
    t = np.arange(2000) * 0.02
    v = np.full(len(t), np.nan)
    v[::5] = 1.0
    v[500:800] = np.nan  # no reading for 6 s: a real hole
    v[1000:1015] = np.nan  # a few skipped readings (0.3 s): drawn through
    x, y, lone = channel_line(t, v, 4000)
    assert np.isnan(y).sum() == 1 and not lone
    gap = x[int(np.flatnonzero(np.isnan(y))[0])]
    assert t[495] < gap < t[800]
    v[1500] = 1.0  # a reading alone between two holes is flagged for a marker
    v[1300:1500] = v[1501:1800] = np.nan
    x, y, lone = channel_line(t, v, 4000)
    assert np.isnan(y).sum() == 3 and lone


def test_channel_line_without_readings():
    x, y, lone = channel_line(np.arange(5.0), np.full(5, np.nan), 100)
    assert len(x) == len(y) == 0 and not lone
