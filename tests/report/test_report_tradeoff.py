"""The speed-against-quality section: points per variant, the Pareto front, the cell table, Chromium."""

from __future__ import annotations

import json
import re

import pytest

from melt.analysis import synthetic as syn
from melt.report import build_report
from melt.report.tradeoff import pareto_front
from melt.store.runs import ResultsStore

#: (quantization, decode tok/s, W while decoding, KLD against the host copy)
VARIANTS = (
    ("F16", 10.0, 4.0, 0.0005),   # closest to the reference, slowest
    ("Q8_0", 16.0, 4.0, 0.004),   # front: faster than F16, better than Q4
    ("Q6_K", 14.0, 4.6, 0.010),   # beaten by Q8_0 on both speed and KLD
    ("Q4_K_M", 22.0, 3.5, 0.030),  # front: fastest
    ("Q3_K_S", 20.0, 3.8, 0.200),  # beaten by Q4_K_M on both
)


def cells_for(device: str) -> list[syn.Cell]:
    out = []
    for quant, tps, power, kld in VARIANTS:
        bench = syn.Cell(device=device, model="gemma-3-270m", quantization=quant, decode_tps=tps,
                         prefill_tps=tps * 10, power_w=power)
        quality = syn.renamed(bench, workload="quality", kind="quality", kld_mean=kld,
                              params={"quality_reference": "host", "n_ctx": 128, "chunks": 4})
        out += [bench, quality]
    return out


def front_by_hand(points: dict[str, tuple[float, float]], speed_sign: int) -> set[str]:
    """Variants that no other has both at least as fast (or frugal) and at least as close, better on one."""
    out = set()
    for name, (s, k) in points.items():
        if not any(s2 * speed_sign >= s * speed_sign and k2 <= k and (s2 != s or k2 != k)
                   for other, (s2, k2) in points.items() if other != name):
            out.add(name)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("tradeoff")
    run = syn.make_run(ResultsStore(root / "results"), cells_for("pixel-8"), repetitions=3, noise=0.002,
                       seed=3)
    return run, build_report([run], root / "report.html")


def test_the_front_holds_the_variants_no_other_beats(report):
    run, info = report
    html = info.path.read_text(encoding="utf-8")
    figs = json.loads(re.search(r'<script type="application/json" id="melt-figures">(.*?)</script>',
                                html, re.S).group(1))
    speed = {q: tps for q, tps, _, _ in VARIANTS}
    kld = {q: k for q, _, _, k in VARIANTS}
    joules = {q: p / tps for q, tps, p, _ in VARIANTS}  # J/token while decoding
    expect_speed = front_by_hand({q: (speed[q], kld[q]) for q in speed}, +1)
    expect_energy = front_by_hand({q: (joules[q], kld[q]) for q in speed}, -1)
    assert expect_speed == {"F16", "Q8_0", "Q4_K_M"}  # the table above means what it says
    for ident, expect in (("tradeoff-speed-0", expect_speed), ("tradeoff-energy-1", expect_energy)):
        fig = figs[ident]
        (front_trace,) = [t for t in fig["data"] if t["name"] == "on the front"]
        drawn = {name.split()[-1] for name in front_trace["text"]}
        assert drawn == expect, ident
        # error bars on both axes: the KLD's own ± and the speed's interval
        assert all(e > 0 for e in front_trace["error_x"]["array"])
        assert any(e > 0 for e in front_trace["error_y"]["array"])
        assert fig["layout"]["legend"]["orientation"] == "h" and fig["layout"]["legend"]["y"] < 0
    sentence = re.search(r'<p class="front-sentence">(.*?)</p>', html, re.S).group(1)
    assert "pixel-8" in sentence and all(f"gemma-3-270m {q}" in sentence for q in expect_speed)
    assert "Q6_K" not in sentence and "Q3_K_S" not in sentence
    assert 'id="chart-tradeoff-speed-0"' in html and 'id="chart-tradeoff-energy-1"' in html


def test_the_cell_table_has_the_quality_columns(report):
    _, info = report
    html = info.path.read_text(encoding="utf-8")
    head = re.search(r'<table id="summary-table">.*?</thead>', html, re.S).group(0)
    for title in ("perplexity", "KLD mean", "same top token %"):
        assert f"<th>{title}</th>" in head
    assert "evaluation ±" in html  # a quality cell's interval is its evaluation's own


def test_pareto_front_function():
    pts = [(10, 0.1), (20, 0.3), (15, 0.05), (9, 0.2)]
    assert pareto_front(pts, (+1, -1)) == [False, True, True, False]
    assert pareto_front([(1, 1), (1, 1)], (+1, -1)) == [True, True]  # ties beat nobody


def test_no_tradeoff_without_quality_jobs(tmp_path):
    run = syn.make_run(ResultsStore(tmp_path / "results"), syn.grid(devices=("pixel-8",)), repetitions=2)
    html = build_report([run], tmp_path / "r.html").path.read_text(encoding="utf-8")
    assert 'id="tradeoff"' not in html


@pytest.mark.browser
def test_the_tradeoff_chart_draws_in_chromium(browser_context, report):
    _, info = report
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(info.path.as_uri())
    page.wait_for_selector("body[data-charts-rendered]", timeout=20_000)
    chart = page.locator("#chart-tradeoff-speed-0")
    assert chart.get_attribute("data-rendered") == "1"
    assert chart.locator("svg.main-svg").count() >= 1
    # five variant markers and the front's dotted line
    assert chart.locator("g.scatterlayer g.points path.point").count() == len(VARIANTS)
    assert chart.locator("g.scatterlayer path.js-line").count() >= 1
    assert chart.locator("g.legend").count() == 1 and not errors
    page.close()


def test_the_chart_uses_one_model_reference_and_names_who_has_no_kld(tmp_path):
    """Against ``host`` every variant scores KLD 0 (it checks the build): the model reference wins,
    and a variant with another tokenizer (perplexity only) is left out and named."""
    cells = []
    for quant, tps, _, kld in VARIANTS[:3]:
        bench = syn.Cell(device="pixel-8", model="gemma-3-270m", quantization=quant, decode_tps=tps)
        cells += [bench,
                  syn.renamed(bench, workload="vs-source", kind="quality", kld_mean=kld,
                              params={"reference": "gemma-3-270m-f16", "ctx": 128, "chunks": 4}),
                  syn.renamed(bench, workload="vs-host", kind="quality", kld_mean=0.0,
                              params={"reference": "host", "ctx": 128, "chunks": 4})]
    other = syn.Cell(device="pixel-8", model="smollm2-135m", quantization="Q4_1", decode_tps=40.0)
    cells += [other, syn.renamed(other, workload="vs-source", kind="quality", kld_mean=None,
                                 params={"reference": "gemma-3-270m-f16", "ctx": 128, "chunks": 4})]
    run = syn.make_run(ResultsStore(tmp_path / "results"), cells, repetitions=2, noise=0.002, seed=4)
    html = build_report([run], tmp_path / "r.html").path.read_text(encoding="utf-8")
    figs = json.loads(re.search(r'<script type="application/json" id="melt-figures">(.*?)</script>',
                                html, re.S).group(1))
    fig = figs["tradeoff-speed-0"]
    points = {n.split()[-1]: x for t in fig["data"] if t["name"] != "Pareto front"
              for n, x in zip(t["text"], t["x"])}
    assert points == pytest.approx({q: k for q, _, _, k in VARIANTS[:3]}, rel=0.05)  # not the host's zeros
    assert "reference gemma-3-270m-f16" in fig["layout"]["title"]["text"]
    sentence = re.search(r'<p class="front-sentence">(.*?)</p>', html, re.S).group(1)
    assert "KLD mean from gemma-3-270m-f16" in sentence
    assert "left out, without a KLD mean against gemma-3-270m-f16: smollm2-135m Q4_1" in sentence
