"""Trace panels from real runs' traces (tests/data/report): each channel from its own readings."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melt.report.figures import trace_channels, trace_data

DATA = Path(__file__).parents[1] / "data" / "report"
JOBS = json.loads((DATA / "real-traces.json").read_text())


def decoded(spec: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype="<" + spec["dtype"])


@pytest.mark.parametrize("job", JOBS, ids=[j["trace"] for j in JOBS])
@pytest.mark.parametrize("n_points", [64, 4000])
def test_every_series_is_one_line_over_its_readings(job, n_points):
    frame = pd.read_parquet(DATA / job["trace"])
    slow = [c for c in frame.columns if frame[c].isna().mean() > 0.5]
    assert slow  # the case at hand: columns read every few ticks, NaN between
    data = trace_data(frame, job, n_points)
    assert data is not None and data["panels"]
    titles = [p["title"] for p in data["panels"]]
    assert titles == [t for t, _ in trace_channels(frame)]
    drawn = 0
    for panel in data["panels"]:
        for s in panel["series"]:
            x, y = decoded(data["times"][s["x"]]), decoded(s["y"])
            assert len(x) == len(y) >= 2 and not s["lone"], (panel["title"], s["name"])
            assert not np.isnan(y).any(), (panel["title"], s["name"])  # no channel here went silent
            readings = frame.loc[frame[s["name"]].notna(), "t_s"] if s["name"] in frame else frame["t_s"]
            assert x[0] == pytest.approx(readings.iloc[0], abs=1e-4)
            assert x[-1] == pytest.approx(readings.iloc[-1], abs=1e-4)
            assert len(x) <= max(n_points, readings.size) + 1
            drawn += len(x)
    assert data["points"] == drawn
    # channels read at the same ticks share their times
    masks = {(frame[c] if c in frame else frame["t_s"]).notna().to_numpy().tobytes()
             for p in data["panels"] for c in (s["name"] for s in p["series"])}
    assert len(data["times"]) == len(masks)
    sizes = []
    trace_data(frame, job, lambda channels, axes: sizes.append((channels, axes)) or n_points)
    assert sizes == [(sum(len(p["series"]) for p in data["panels"]), len(masks))]
    assert any(c in slow for p in data["panels"] for c in (s["name"] for s in p["series"]))


def test_all_nan_channels_and_empty_panels_are_left_out():
    frame = pd.DataFrame({"t_s": np.arange(50) * 0.02, "rss_bytes": np.linspace(1e6, 2e6, 50),
                          "temp_cpu_c": np.nan, "cpufreq_cpu0_khz": np.nan})
    assert trace_channels(frame) == [("Memory (MiB)", ["rss_bytes"])]
    data = trace_data(frame, {}, 100)
    assert [p["title"] for p in data["panels"]] == ["Memory (MiB)"]


def test_sustained_temperature_skips_windows_without_a_reading():
    from melt.report.workloads import sustained_charts

    series = [{"start_s": float(k), "end_s": k + 1.0, "tps": 20.0,
               "temp_c": 30.0 + k if k % 3 == 0 else None} for k in range(9)]
    job = {"record": {"series": series}, "status": "ok", "device": "d", "model": "m", "workload": "w",
           "repetition": 0}
    temp = sustained_charts([job])[0]["figure"]["data"][1]
    assert temp["y"] == [30.0, 33.0, 36.0] and temp["x"] == [0.5, 3.5, 6.5]
    assert temp["mode"] == "lines"
