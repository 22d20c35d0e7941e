"""A large report: tables and chart data embedded compressed, traces in files beside the page.

Both are checked against the plain report of the same run, in real headless
Chromium: the unpacked tables are the same markup, the charts the same
figures, and a trace loaded from its file on opening draws the same points
as one read from the page.
"""

from __future__ import annotations

import re

import pytest

from melt.analysis import synthetic as syn
from melt.report import build, build_report
from melt.store.runs import ResultsStore

pytestmark = pytest.mark.browser

READ = """async () => {
    const summary = document.querySelector('#summary-table tbody').innerHTML.trim();
    const jobs = document.querySelector('#jobs-table tbody').innerHTML.trim();  // before traces draw in it
    const traces = {};
    for (const d of document.querySelectorAll('details.trace')) {
        d.open = true;
        await window.meltRenderTrace(d);
        const plot = d.querySelector('.trace-plot');
        traces[d.closest('tr').previousElementSibling.getAttribute('data-job')] = {
            error: plot.getAttribute('data-error'),
            series: (plot._fullData || []).map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))};
    }
    const charts = {};
    for (const div of document.querySelectorAll('[data-figure]')) {
        charts[div.id] = {rendered: div.getAttribute('data-rendered'),
                          y: div.data.map(t => Array.from(t.y))};
    }
    return {summary: summary, jobs: jobs,
            packed: document.querySelectorAll('[data-packed]').length,
            traces: traces, charts: charts};
}"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = ResultsStore(tmp_path_factory.mktemp("packed") / "results")
    cells = syn.grid(devices=("pixel-8", "rpi-5"), n_gens=(16, 64))
    return syn.make_run(store, cells, repetitions=2, trace_samples=400, noise=0.02,
                        failed={cells[-1].cell_id: "synthetic <b>failure</b>"})


def _open(ctx, path):
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-tables-rendered]", state="attached", timeout=30_000)
    out = page.evaluate(READ)
    page.close()
    assert errors == []
    return out


def test_packed_tables_and_trace_files_show_what_the_plain_report_does(run, tmp_path, browser_context,
                                                                      monkeypatch):
    plain = build_report([run], tmp_path / "plain.html", traces="inline")
    monkeypatch.setattr(build, "PACK_CHARS", 200)
    monkeypatch.setattr(build, "TRACES_PER_FILE", 5)
    big = build_report([run], tmp_path / "big.html", traces="beside")
    html = big.path.read_text(encoding="utf-8")
    assert 'id="trace-t' not in html and 'data-packed="jobs"' in html and 'data-packed="figures"' in html
    assert big.traces_dir == tmp_path / "big-data" and big.traces == plain.traces == 14
    assert sorted(p.name for p in big.traces_dir.iterdir()) == ["traces-0.js", "traces-1.js", "traces-2.js"]
    assert big.traces_bytes == sum(p.stat().st_size for p in big.traces_dir.iterdir())

    want, got = _open(browser_context, plain.path), _open(browser_context, big.path)
    assert want["packed"] == 0 and got["packed"] == 0  # every packed block was unpacked
    assert got["summary"] == want["summary"]
    srcs = re.findall(r' data-src="([^"]+)"', got["jobs"])
    assert sorted(set(srcs)) == [f"big-data/traces-{n}.js" for n in range(3)] and len(srcs) == 14
    assert re.sub(r' data-src="[^"]+"', "", got["jobs"]) == want["jobs"]
    assert got["charts"] == want["charts"] and all(c["rendered"] for c in got["charts"].values())
    assert len(got["traces"]) == 14 and got["traces"] == want["traces"]
    assert all(t["error"] is None and t["series"] and all(len(s["y"]) > 10 for s in t["series"])
               for t in got["traces"].values())
    assert "&lt;b&gt;failure&lt;/b&gt;" in got["jobs"]  # escaped by the template before packing


def test_a_missing_trace_file_says_so_in_its_chart(run, tmp_path, browser_context):
    info = build_report([run], tmp_path / "r.html", traces="beside")
    for f in info.traces_dir.iterdir():
        f.unlink()
    got = _open(browser_context, info.path)
    errors = {t["error"] for t in got["traces"].values()}
    assert len(errors) == 1 and "keep it beside the report" in errors.pop()


def test_auto_keeps_small_traces_in_the_page_and_refuses_unknown_modes(run, tmp_path):
    info = build_report([run], tmp_path / "r.html")
    assert info.traces_dir is None and info.traces == 14
    assert info.path.read_text(encoding="utf-8").count('id="trace-t') == 14
    with pytest.raises(ValueError, match="traces must be"):
        build_report([run], tmp_path / "x.html", traces="sideways")


def test_a_chart_of_many_series_names_them_on_hover_only():
    import pandas as pd

    from melt.report.figures import MAX_LEGEND_SERIES, bar_chart

    def chart(n_series: int) -> dict:
        table = pd.DataFrame({"device": ["d1", "d2"] * n_series,
                              "model": [f"m{i // 2}" for i in range(2 * n_series)],
                              "decode_tps": 10.0, "decode_tps_ci_low": 9.0, "decode_tps_ci_high": 11.0})
        return bar_chart(table, "decode_tps", "device", ["model"], "decode")

    few, many = chart(MAX_LEGEND_SERIES), chart(MAX_LEGEND_SERIES + 1)
    assert len(few["data"]) == MAX_LEGEND_SERIES and few["layout"]["showlegend"] is True
    assert "hover" not in few["layout"]["title"]["text"]
    assert len(many["data"]) == MAX_LEGEND_SERIES + 1 and many["layout"]["showlegend"] is False
    assert f"{MAX_LEGEND_SERIES + 1} series: hover a bar for its name" in many["layout"]["title"]["text"]
