"""Traces of real runs in real headless Chromium: every panel draws a visible line.

The traces come from real runs on the virtual phone, the virtual Jetson and
the local machine (tests/data/report/README.md), plus one job run now on this
machine with telemetry. Their slow channels (temperature, frequency, battery,
CPU use) are read every fifth sampler tick with NaN in between, the case a
line through one shared time axis cannot draw.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from melt.report import build_report
from melt.report.figures import trace_channels
from melt.store.runs import ResultsStore

pytestmark = pytest.mark.browser

DATA = Path(__file__).parents[1] / "data" / "report"

#: the panels each device's trace fills
PANELS = {
    "virtual-phone": ["Power (W)", "Temperature (°C)", "Frequency (MHz)", "Utilisation (%)", "Memory (MiB)"],
    "virtual-jetson": ["Power (W)", "Temperature (°C)", "Frequency (MHz)", "Utilisation (%)", "Memory (MiB)"],
    "local": ["Utilisation (%)", "Memory (MiB)"],
}

#: per trace: the y-axis titles and, per subplot, every series' name and drawn line
#: (its SVG path and width in px), with the x axis' range and length in px
READ_PANELS = """async () => {
    const out = [];
    for (const d of document.querySelectorAll('details.trace')) {
        d.open = true;
        await window.meltRenderTrace(d);
        const plot = d.querySelector('.trace-plot');
        const xa = plot._fullLayout.xaxis;
        const subplots = [...plot.querySelectorAll('g.cartesianlayer > g.subplot')].map(sp => {
            const id = [...sp.classList].find(c => /^xy\\d*$/.test(c));
            const names = plot.data.filter(t => 'x' + t.yaxis === id).map(t => t.name);
            const lines = [...sp.querySelectorAll('g.trace.scatter')].map((tr, i) => {
                // each unbroken piece is a path of its own: read them all
                const paths = [...tr.querySelectorAll('path.js-line')].filter(p => p.getAttribute('d'));
                const boxes = paths.map(p => p.getBBox());
                return {name: names[i], d: paths.map(p => p.getAttribute('d')).join(''),
                        width: boxes.length ? Math.max(...boxes.map(b => b.x + b.width))
                                              - Math.min(...boxes.map(b => b.x)) : 0};
            });
            return {id: id, lines: lines};
        });
        out.push({job: d.closest('tr').previousElementSibling.getAttribute('data-job'), error: plot.getAttribute('data-error'),
                  ytitles: [...plot.querySelectorAll('[class^="g-y"][class$="title"]')].map(e => e.textContent),
                  range: xa.range, length: xa._length, subplots: subplots});
    }
    return out;
}"""


def pieces(d: str) -> list[int]:
    """Points of each unbroken piece of an SVG path (``M x,y L x,y ... M ...``)."""
    number = r"-?[\d.]+(?:e-?\d+)?"
    return [len(re.findall(f"{number},{number}", p)) for p in d.split("M") if p.strip()]


def live_local_job(workdir: Path) -> tuple[dict, bytes]:
    """A phased job with telemetry on this machine, now: the real runner script and sampler."""
    from melt.config.specs import DeviceSpec, TelemetrySpec
    from melt.devices.local import LocalDevice
    from melt.frameworks.base import Invocation
    from melt.runner.telemetry_executor import TelemetryExecutor
    from melt.telemetry.baseline import BaselineStore
    from melt.transports.local import LocalTransport

    burn = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"
    device = LocalDevice(DeviceSpec(name="local", kind="local", workdir=str(workdir),
                                    telemetry=TelemetrySpec(idle_s=0.3)), LocalTransport())
    e = TelemetryExecutor(health=False, baselines=BaselineStore(workdir / "baselines")).execute(
        device, [("prefill", Invocation((sys.executable, "-c", burn))), ("decode", Invocation(("sleep", "0.5")))])
    assert e.returncode == 0, e.stderr
    job = {"trace": None, "device": "local (live)", "framework": "python", "model": "busy loop",
           "workload": "burn", "kind": "generate", "params": {}, "repetition": 0, "simulated": False,
           "phases": e.provenance.get("phases") or [], "metrics": {}}
    return job, e.files["trace.parquet"]


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-traces")
    store = ResultsStore(root / "results")
    run = store.create_run({"name": "real traces"}, experiment_path=None, host={})
    jobs = json.loads((DATA / "real-traces.json").read_text())
    traces = [(DATA / job["trace"]).read_bytes() for job in jobs]
    live, live_trace = live_local_job(root / "device")
    jobs.append(live)
    traces.append(live_trace)
    for i, (job, trace) in enumerate(zip(jobs, traces)):
        record = {k: v for k, v in job.items() if k != "trace"}
        record.update(job_id=f"job{i}", cell_id=f"cell{i}", status="ok", reason=None, provenance={})
        run.save_job(record, {"trace.parquet": trace})
        job["frame"] = pd.read_parquet(io.BytesIO(trace))
    run.update(status="complete", total_jobs=len(jobs))
    info = build_report([run], root / "report.html")
    return jobs, info


@pytest.fixture
def page(browser_context, real_report):
    _, info = real_report
    page = browser_context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(info.path.as_uri())
    page.wait_for_selector("body[data-charts-rendered]", timeout=20_000)
    yield page
    page.close()


def test_every_trace_panel_draws_a_visible_line(page, real_report):
    jobs, info = real_report
    traces = page.evaluate(READ_PANELS)
    assert len(traces) == info.traces == len(jobs)
    assert sorted(t["job"] for t in traces) == sorted(f"job{i}" for i in range(len(jobs)))
    for trace in traces:
        job = jobs[int(trace["job"].removeprefix("job"))]
        where, frame = job["trace"] or "live local job", job["frame"]
        assert trace["error"] is None, (where, trace["error"])
        assert len(trace["subplots"]) == len(trace["ytitles"]) >= 1, where
        px_per_s = trace["length"] / (trace["range"][1] - trace["range"][0])
        for title, sub in zip(trace["ytitles"], trace["subplots"]):
            assert sub["lines"], (where, title, "no series")
            for line in sub["lines"]:
                what = (where, title, line["name"], line["d"][:120])
                # one unbroken line (no channel here went a second without a reading) ...
                assert len(pieces(line["d"])) == 1 and pieces(line["d"])[0] >= 2, what
                # ... from the channel's first reading to its last
                read = frame.loc[frame[line["name"]].notna(), "t_s"] if line["name"] in frame else frame["t_s"]
                expected = (read.iloc[-1] - read.iloc[0]) * px_per_s
                assert line["width"] >= 0.95 * expected - 2 and line["width"] > 10, (*what, line["width"], expected)
    # every panel the device's channels can fill is there
    for trace in traces:
        job = jobs[int(trace["job"].removeprefix("job"))]
        if job["trace"] is None:  # this machine: CPU use and memory at least, maybe sensors too
            assert trace["ytitles"] == [t for t, _ in trace_channels(job["frame"])]
            assert {"Utilisation (%)", "Memory (MiB)"} <= set(trace["ytitles"])
            assert job["frame"]["cpu_util_pct"].isna().mean() > 0.5  # read every few ticks
        else:
            assert trace["ytitles"] == PANELS[job["device"]], job["trace"]
    assert not page.errors
