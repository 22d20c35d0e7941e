"""Channels read at low rates in real headless Chromium: each draws a line of its own.

A trace holds channels read at very different rates: power at 50 Hz, a
battery temperature every 2 s (with the jitter of a busy sampler), a die
temperature every 0.1 s, a frequency that went silent for 20 s, and a skin
temperature read once. A gap rule taken from the fastest channel would cut
the 2 s channel at every reading and leave dots nobody sees; the report must
draw it as one unbroken line, break only the channel that really went
silent, and mark the single reading.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from melt.report import build_report
from melt.store.runs import ResultsStore
from tests.report.test_report_traces_browser import pieces

pytestmark = pytest.mark.browser

HZ = 50.0
BATTERY_EVERY_S = 2.0

#: per trace: every series' name, mode, drawn line (its SVG paths, width in px) and markers
READ_SERIES = """async () => {
    const out = {};
    for (const d of document.querySelectorAll('details.trace')) {
        d.open = true;
        await window.meltRenderTrace(d);
        const plot = d.querySelector('.trace-plot');
        const xa = plot._fullLayout.xaxis;
        const series = [...plot.querySelectorAll('g.trace.scatter')].map((tr, i) => {
            // Plotly draws each unbroken piece of a line as a path of its own
            const paths = [...tr.querySelectorAll('path.js-line')].filter(p => p.getAttribute('d'));
            const boxes = paths.map(p => p.getBBox());
            return {name: plot.data[i].name, mode: plot.data[i].mode,
                    d: paths.map(p => p.getAttribute('d')).join(''),
                    width: boxes.length ? Math.max(...boxes.map(b => b.x + b.width)) - Math.min(...boxes.map(b => b.x)) : 0,
                    markers: tr.querySelectorAll('path.point').length};
        });
        out[d.closest('tr').previousElementSibling.getAttribute('data-job')] = {
            error: plot.getAttribute('data-error'), px_per_s: xa._length / (xa.range[1] - xa.range[0]),
            series: series};
    }
    return out;
}"""


def mixed_rate_trace(duration_s: float, seed: int) -> pd.DataFrame:
    """One row per 50 Hz tick; slower channels hold NaN between their readings."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * HZ)
    t = np.arange(n) / HZ + rng.normal(0, 0.002, n).clip(-0.004, 0.004)
    frame = pd.DataFrame({"t_s": t, "power_w": 2.0 + np.sin(t) + rng.normal(0, 0.1, n),
                          "rss_bytes": np.linspace(200e6, 260e6, n)})
    battery = np.full(n, np.nan)
    every = int(BATTERY_EVERY_S * HZ)
    # a busy sampler reads it a tick or two late now and then
    ticks = np.clip(np.arange(0, n, every) + rng.integers(0, 3, len(range(0, n, every))), 0, n - 1)
    battery[ticks] = 30.0 + 0.02 * t[ticks] + rng.normal(0, 0.05, len(ticks))
    frame["temp_battery_c"] = battery
    die = np.full(n, np.nan)
    die[::5] = 40.0 + 5 * np.sin(t[::5] / 3)
    frame["temp_cpu_0_0_c"] = die
    freq = np.full(n, np.nan)
    freq[::5] = 1_800_000 + 100_000 * np.sign(np.sin(t[::5]))
    silent = (t > duration_s * 0.3) & (t < duration_s * 0.3 + 20.0)
    freq[silent] = np.nan  # the sensor stopped answering for 20 s
    frame["cpufreq_cpu0_khz"] = freq
    skin = np.full(n, np.nan)
    skin[n // 2] = 33.0
    frame["temp_skin_c"] = skin
    return frame


@pytest.fixture(scope="module")
def sparse_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse-traces")
    store = ResultsStore(root / "results")
    run = store.create_run({"name": "mixed rates"}, experiment_path=None, host={})
    frames = {"job0": mixed_rate_trace(60.0, seed=1), "job1": mixed_rate_trace(5.0, seed=2)}
    for i, (job_id, frame) in enumerate(frames.items()):
        buf = io.BytesIO()
        frame.to_parquet(buf)
        record = {"job_id": job_id, "cell_id": f"cell{i}", "status": "ok", "reason": None, "provenance": {},
                  "device": "phone", "framework": "llama.cpp", "model": "gemma", "workload": f"w{i}",
                  "kind": "generate", "params": {}, "repetition": 0, "simulated": False, "metrics": {},
                  "phases": [{"name": "decode", "start_s": 0.5, "end_s": float(frame["t_s"].iloc[-1])}]}
        run.save_job(record, {"trace.parquet": buf.getvalue()})
    run.update(status="complete", total_jobs=len(frames))
    return frames, build_report([run], root / "report.html")


def test_low_rate_channels_draw_unbroken_lines(browser_context, sparse_report):
    frames, info = sparse_report
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(info.path.as_uri())
    page.wait_for_selector("body[data-charts-rendered]", timeout=20_000)
    traces = page.evaluate(READ_SERIES)
    page.close()
    assert sorted(traces) == sorted(frames) and not errors, errors
    for job_id, frame in frames.items():
        trace = traces[job_id]
        assert trace["error"] is None, trace["error"]
        series = {s["name"]: s for s in trace["series"]}
        assert set(series) >= {"power_w", "temp_battery_c", "temp_cpu_0_0_c", "cpufreq_cpu0_khz", "temp_skin_c"}
        for name in ("temp_battery_c", "temp_cpu_0_0_c", "power_w"):
            line = series[name]
            read = frame.loc[frame[name].notna(), "t_s"]
            what = (job_id, name, len(read), line["d"][:160])
            # one piece through more than one point ...
            assert len(pieces(line["d"])) == 1 and pieces(line["d"])[0] >= 2, what
            # ... from the channel's first reading to its last
            expected = (read.iloc[-1] - read.iloc[0]) * trace["px_per_s"]
            assert line["width"] >= 0.95 * expected - 2 and line["width"] > 10, (*what, line["width"], expected)
        assert frame["temp_battery_c"].notna().sum() <= 31  # sparse indeed: one reading every 2 s
        # a reading on its own is a marker, not an invisible line of one point
        skin = series["temp_skin_c"]
        assert skin["mode"] == "lines+markers" and skin["markers"] == 1, skin
    # the channel that really went silent for 20 s breaks there, and only there
    freq = traces["job0"]["series"]
    gap = next(s for s in freq if s["name"] == "cpufreq_cpu0_khz")
    assert [n >= 2 for n in pieces(gap["d"])] == [True, True], gap["d"][:200]
    # the short job's battery channel has three readings and still draws its line
    assert frames["job1"]["temp_battery_c"].notna().sum() == 3
