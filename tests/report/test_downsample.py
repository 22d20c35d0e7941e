from __future__ import annotations

import numpy as np

from melt.report.downsample import lttb, minmax_envelope


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
