"""The report in real headless Chromium: charts render, numbers are right, hostile names stay text."""

from __future__ import annotations

import statistics

import pytest

from melt.analysis import synthetic as syn
from melt.analysis.metrics import SUMMARY_METRICS, format_value
from melt.report import build_report
from melt.store.runs import ResultsStore

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    store = ResultsStore(root / "results")
    cells = syn.grid(devices=("pixel-8", "galaxy-s23"))
    cells[0] = syn.renamed(cells[0], model=HOSTILE, device="pixel<script>window.pwned=1</script>")
    run = syn.make_run(store, cells, repetitions=3, trace_samples=3000, seed=7,
                       failed={cells[3].cell_id: f"crashed on {HOSTILE}"})
    info = build_report([run], root / "report.html")
    return run, info


@pytest.fixture
def page(browser_context, report):
    run, info = report
    page = browser_context.new_page()
    page.dialogs, page.errors, page.requests = [], [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(info.path.as_uri())
    page.wait_for_selector("body[data-charts-rendered]", timeout=20_000)
    yield page
    page.close()


def test_every_chart_renders(page, report):
    _, info = report
    charts = page.locator("div.chart")
    assert charts.count() == info.charts >= 6
    assert page.get_attribute("body", "data-charts-rendered") == str(info.charts)
    assert page.locator("div.chart[data-rendered='1'] svg.main-svg").count() >= info.charts
    assert page.locator("div.chart[data-error]").count() == 0
    bars = page.evaluate("() => document.querySelectorAll('div.chart g.point path').length")
    assert bars > 0
    assert not page.errors and not page.dialogs
    assert all(u.startswith("file://") for u in page.requests), page.requests  # works offline


def test_every_trace_renders_with_phases_and_throttling(page, report):
    _, info = report
    n = page.evaluate("""async () => {
        const ds = [...document.querySelectorAll('details.trace')];
        for (const d of ds) { d.open = true; await window.meltRenderTrace(d); }
        return ds.length; }""")
    assert n == info.traces == 9
    assert page.locator(".trace-plot[data-rendered='1'] svg.main-svg").count() >= n
    assert page.locator(".trace-plot[data-error]").count() == 0
    notes = page.evaluate("""() => [...document.querySelectorAll('.trace-plot .annotation-text')]
                                   .map(e => e.textContent)""")
    assert {"load", "prefill", "decode"} <= set(notes)
    throttled_jobs = sum(1 for j in report[0].jobs() if j.get("throttled_intervals"))
    assert notes.count("throttled") == throttled_jobs
    panels = page.evaluate("""() => [...document.querySelector('.trace-plot').querySelectorAll('[class^="g-y"][class$="title"]')]
                                    .map(e => e.textContent)""")
    assert panels == ["Power (W)", "Temperature (°C)", "Frequency (MHz)", "Memory (MiB)"]
    assert not page.errors and not page.dialogs


def test_summary_table_holds_the_expected_numbers(page, report):
    run, _ = report
    jobs = [j for j in run.jobs() if j["status"] == "ok"]
    by_cell: dict[str, list[dict]] = {}
    for j in jobs:
        by_cell.setdefault(j["cell_id"], []).append(j)
    rows = page.locator("#summary-table tbody tr")
    assert rows.count() == len(by_cell)
    for cell_id, group in by_cell.items():
        row = page.locator(f"#summary-table tr[data-cell='{cell_id}']")
        for metric in SUMMARY_METRICS:
            td = row.locator(f"td[data-metric='{metric}']")
            if all(metric not in j["metrics"] for j in group):  # e.g. a measured TTFT of a bench cell
                assert td.get_attribute("data-value") is None and td.inner_text() == "–"
                continue
            expected = statistics.median(j["metrics"][metric] for j in group)
            assert float(td.get_attribute("data-value")) == pytest.approx(expected, rel=1e-6)
            assert td.inner_text().splitlines()[0] == format_value(metric, expected)
        assert row.locator("td.num").first.inner_text() == str(len(group))


def test_hostile_strings_are_text_and_run_nothing(page, report):
    assert page.locator("#summary-table td.model", has_text=HOSTILE).count() >= 1
    model_cells = page.evaluate("() => [...document.querySelectorAll('#summary-table td.model')].map(e => e.textContent)")
    assert HOSTILE in model_cells
    assert page.evaluate("() => document.querySelectorAll('img').length") == 0
    assert page.evaluate("() => window.pwned === undefined")
    legend = page.evaluate("() => [...document.querySelectorAll('div.chart .legendtext')].map(e => e.textContent)")
    assert any(HOSTILE in t for t in legend)  # Plotly shows it literally
    devices = page.evaluate("() => [...document.querySelectorAll('#summary-table td.device')].map(e => e.textContent)")
    assert any("pixel<script>window.pwned=1</script>" in d for d in devices)
    reasons = page.locator("#failed-table td.reason").all_inner_texts()
    assert reasons == [f"crashed on {HOSTILE}"] * 3
    assert page.locator("#simulated-notice").is_visible()
    assert not page.dialogs and not page.errors
