"""The report file itself: escaping, offline, sizes, sections (no browser needed)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from melt.analysis import synthetic as syn
from melt.cli.main import cli
from melt.report import build_report
from melt.store.runs import ResultsStore
from tests.helpers import error_line, melt

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def run(tmp_path):
    store = ResultsStore(tmp_path / "results")
    cells = syn.grid(devices=("pixel-8", "jetson <b>orin</b>"))
    cells[0] = syn.renamed(cells[0], model=HOSTILE)
    return syn.make_run(store, cells, repetitions=3, trace_samples=1000,
                        failed={cells[3].cell_id: "killed: <script>alert('x')</script> & more"})


def test_user_strings_are_escaped_everywhere(run, tmp_path):
    info = build_report([run], tmp_path / "r.html")
    html = info.path.read_text(encoding="utf-8")
    assert HOSTILE not in html and "<script>alert" not in html and "<b>orin" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown as text in tables
    assert "killed: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in html
    # JSON blocks cannot close their <script> element
    for block in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', html, re.S):
        assert "<" not in block


def test_offline_sections_and_counts(run, tmp_path):
    info = build_report([run], tmp_path / "r.html")
    html = info.path.read_text(encoding="utf-8")
    outside_js = re.sub(r"<script>.*?</script>", "", html, flags=re.S)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", outside_js)
    assert 'id="simulated-notice"' in html and info.simulated_jobs == info.jobs == 12
    assert info.failed == 3 and info.traces == 9 and info.cells == 3
    # readings of the six drawn channels (power, two zones, two CPUs, memory) of 1,000 ticks each
    assert info.trace_samples == 9 * 1000 * 6 and info.trace_points <= info.trace_samples
    assert html.count('class="chart"') == info.charts >= 6
    assert "plotly.js v" in html  # inlined


def test_plotly_beside_and_cli(run, tmp_path):
    out = tmp_path / "sub" / "r.html"
    res = CliRunner().invoke(cli, ["report", run.run_id, "-o", str(out), "--plotly-js", "beside",
                                   "--results", str(run.store.root)])
    assert res.exit_code == 0, res.output
    assert (out.parent / "plotly.min.js").is_file()
    html = out.read_text(encoding="utf-8")
    assert '<script src="plotly.min.js"></script>' in html and "plotly.js v" not in html
    assert out.stat().st_size < 1_000_000
    unknown = melt("report", "nope", "--results", str(run.store.root))
    assert "nope" in error_line(unknown)  # a clean one-line error, not a crash


def test_multi_run_report_and_trace_budget(run, tmp_path):
    other = syn.make_run(run.store, syn.grid(devices=("pixel-8",)), repetitions=2, trace_samples=5000)
    info = build_report([run, other], tmp_path / "r.html", trace_values=20_000)
    html = info.path.read_text(encoding="utf-8")
    assert run.run_id in html and other.run_id in html
    assert info.traces == 9 + 4
    assert info.trace_points <= 13 * 2 * 1000  # each trace shrunk to its share


def test_absent_metric_is_a_dash_not_nan(tmp_path):
    store = ResultsStore(tmp_path / "results")
    run = store.create_run({"name": "e"}, experiment_path=None, host={})
    for rep in range(3):  # bench jobs have no TTFT
        run.save_job({"job_id": f"j{rep}", "cell_id": "c", "status": "ok", "reason": None, "device": "d",
                      "framework": "llama.cpp", "model": "m", "workload": "w", "kind": "bench",
                      "params": {"n_gen": 8}, "repetition": rep, "simulated": False,
                      "metrics": {"decode_tps": 10.0 + rep}, "provenance": {}})
    html = build_report([run], tmp_path / "r.html").path.read_text(encoding="utf-8")
    table = html[html.index("<table"):html.index("</table>")]
    assert "nan" not in table.lower()


def test_emulated_jobs_are_marked_and_explained(run, tmp_path):
    import json

    html = build_report([run], tmp_path / "plain.html").path.read_text(encoding="utf-8")
    assert 'id="emulated-notice"' not in html and ">emulated<" not in html
    marked = 0
    for result in (run.dir / "jobs").glob("*/result.json"):
        record = json.loads(result.read_text())
        if record["device"] == "pixel-8":
            record["emulated"] = True
            result.write_text(json.dumps(record))
            marked += 1
    html = build_report([run], tmp_path / "r.html").path.read_text(encoding="utf-8")
    notice = re.search(r'<div class="notice" id="emulated-notice">(.*?)</div>', html, re.S)
    assert notice and f"{marked} of 12 jobs ran another instruction set" in notice.group(1)
    assert "Do not compare them with real phones" in notice.group(1)
    jobs_table = html[html.index('id="jobs-table"'):]
    assert jobs_table.count('<span class="sim">emulated</span>') == marked
