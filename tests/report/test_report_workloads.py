"""The report's per-turn tables and sustained charts, rendered in real headless Chromium."""

from __future__ import annotations

import copy

import pytest

from melt.analysis import synthetic as syn
from melt.report import build_report
from melt.store.runs import ResultsStore

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>"


def _streamed_run(root):
    store = ResultsStore(root / "results")
    cells = syn.grid(devices=("phone",))[:1]
    run = syn.make_run(store, cells, repetitions=1, trace_samples=200, seed=3)
    base = run.jobs()[0]
    chat = copy.deepcopy(base)
    chat.update(job_id="c" * 16, cell_id="c" * 16, workload=f"chat {HOSTILE}", kind="conversation",
                turns=[{"conversation": 1, "turn": i, "context_tokens": 30 + 50 * i, "prompt_tokens": 30,
                        "cached_tokens": 50 * i, "gen_tokens": 24, "ttft_ms": 80.0 + 10 * i,
                        "prefill_tps": 400.0, "decode_tps": 40.0, "e2e_ms": 700.0, "energy_j": 1.5}
                       for i in range(3)],
                conversation_totals=[{"conversation": 1, "turns": 3, "prompt_tokens": 90, "cached_tokens": 150,
                                      "gen_tokens": 72, "e2e_ms": 2100.0, "energy_j": 4.5,
                                      "context_tokens_final": 130}])
    hot = copy.deepcopy(base)
    series = [{"start_s": float(k), "end_s": k + 1.0, "tokens": 40 if k < 5 else 20,
               "tps": 40.0 if k < 5 else 20.0, "temp_c": 30.0 + k, "cpufreq_khz": 2.4e6,
               "throttled": k >= 5} for k in range(10)]
    hot.update(job_id="s" * 16, cell_id="s" * 16, workload="hot", kind="sustained", series=series,
               throttled_intervals=[{"start_s": 5.0, "end_s": 10.0}],
               metrics={**hot["metrics"], "decode_tps_peak": 40.0, "decode_tps_sustained": 20.0})
    run.save_job(chat)
    run.save_job(hot)
    return run


def test_turn_table_and_sustained_chart(tmp_path, browser_context):
    run = _streamed_run(tmp_path)
    info = build_report([run], tmp_path / "r.html")
    html = info.path.read_text(encoding="utf-8")
    assert HOSTILE not in html and 'id="turns"' in html and 'id="sustained"' in html
    page = browser_context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(info.path.as_uri())
    page.wait_for_selector("body[data-charts-rendered]", timeout=20_000)
    rows = page.locator("table.turns tbody tr")
    assert rows.count() == 3
    assert rows.nth(2).locator("td").nth(1).inner_text() == "130"  # context tokens of turn 2
    assert HOSTILE in page.locator("#turns + h3").inner_text()  # shown as text
    footer = page.locator("table.turns tfoot td").all_inner_texts()
    assert footer[:5] == ["total", "130", "90", "150", "72"] and footer[-1] == "4.5"
    chart = page.locator("[data-figure='sustained-0']")
    assert chart.get_attribute("data-rendered") == "1"
    fig = page.evaluate("() => { const d = document.querySelector(\"[data-figure='sustained-0']\");"
                        " return {n: d.data.length, shapes: d.layout.shapes.length, names: d.data.map(t => t.name)}; }")
    assert fig == {"n": 2, "shapes": 1, "names": ["tok/s", "temperature °C"]}
    assert not errors
