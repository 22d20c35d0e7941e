"""The report at a glance, measured in real headless Chromium at laptop and desktop size.

At 1366x768 and 1920x1080 every chart's plotting area is larger than its
legend, legends stay inside their chart, the page never scrolls sideways (wide
tables scroll inside their own box), and long names are shortened on screen
with the full name on hover. Boxes are read with getBoundingClientRect.
"""

from __future__ import annotations

import pytest

from melt.analysis import synthetic as syn
from melt.report import build_report
from melt.store.runs import ResultsStore

pytestmark = pytest.mark.browser

SIZES = [(1366, 768), (1920, 1080)]

#: a model name longer than any column should be, as converted models are often named
LONG_MODEL = "gemma-3-270m-it-qat-unquantized-imatrix-calibrated-wikitext-2-raw-v1-experimental"

#: (quantization, decode tok/s, W while decoding, KLD against the source)
LADDER = (("Q8_0", 30.0, 4.2, 0.004), ("Q4_K_M", 42.0, 4.0, 0.03), ("Q2_K", 45.0, 3.9, 0.40))


def demo_cells() -> list[syn.Cell]:
    """The demo's shape: Gemma on three devices, bench and generate, and a quality ladder."""
    out = []
    for di, device in enumerate(("virtual-phone", "virtual-jetson", "local")):
        for quant, tps, power, kld in LADDER:
            bench = syn.Cell(device=device, model="gemma-3-270m", quantization=quant,
                             decode_tps=tps * (1 + di / 2), prefill_tps=tps * 12, power_w=power,
                             params={"n_prompt": 64, "n_gen": 32, "threads": 4})
            gen = syn.renamed(bench, workload="generate", kind="generate",
                              params={"prompt": "Explain the rules of chess", "n_gen": 32, "threads": 4})
            out += [bench, gen]
            if device == "virtual-phone":
                out.append(syn.renamed(bench, workload="quality", kind="quality", kld_mean=kld,
                                       params={"reference": "gemma-3-270m-q4_k_m", "ctx": 128, "chunks": 4}))
    out.append(syn.Cell(device="virtual-phone", model=LONG_MODEL, quantization="Q4_K_M", decode_tps=25.0,
                        prefill_tps=300.0))
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    store = ResultsStore(root / "results")
    cells = demo_cells()
    runs = [syn.make_run(store, cells, repetitions=3, seed=s, name=f"demo-{s}") for s in (1, 2)]
    return build_report(runs, root / "report.html")


@pytest.fixture(params=SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def page(request, browser_context, report):
    width, height = request.param
    page = browser_context.new_page()
    page.set_viewport_size({"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report.path.as_uri())
    page.wait_for_selector("body[data-charts-rendered]", timeout=30_000)
    page.wait_for_timeout(300)  # a resize pass after the first draw
    yield page
    assert not errors
    page.close()


#: per chart: its box, its plotting area (the drag rectangle over the axes), its legend's box,
#: the x axis' tick labels and title, and the chart's other texts (title, point names)
CHART_BOXES = """() => [...document.querySelectorAll('div.chart[data-figure]')].map(div => {
    const box = e => { if (!e) return null; const r = e.getBoundingClientRect();
                       return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
                               width: r.width, height: r.height}; };
    const all = sel => [...div.querySelectorAll(sel)].map(box).filter(b => b.width > 0);
    return {id: div.id, chart: box(div), plot: box(div.querySelector('g.draglayer rect.nsewdrag')),
            legend: box(div.querySelector('g.legend')),
            xaxis: all('g.xaxislayer-above g.xtick text, g.infolayer g.g-xtitle text'),
            texts: all('g.infolayer g.g-gtitle text, g.scatterlayer g.textpoint text')};
})"""


def test_every_plot_is_larger_than_its_legend(page, report):
    charts = page.evaluate(CHART_BOXES)
    assert len(charts) == report.charts >= 8
    with_legend = [c for c in charts if c["legend"]]
    assert len(with_legend) >= 6  # the bar charts by device and the trade-off charts
    for c in charts:
        assert c["plot"] and c["plot"]["height"] >= 200 and c["plot"]["width"] >= 300, c
        if c["legend"]:
            legend, plot = c["legend"], c["plot"]
            assert legend["width"] * legend["height"] < plot["width"] * plot["height"], c
            # a legend wraps or sits below the plot: it never reaches past its chart's sides
            assert legend["left"] >= c["chart"]["left"] - 1 and legend["right"] <= c["chart"]["right"] + 1, c
            assert legend["top"] >= plot["bottom"] - 1, c
            assert all(legend["top"] >= t["bottom"] - 1 for t in c["xaxis"]), c  # below the axis labels


def test_titles_and_point_names_stay_inside_their_chart(page):
    for c in page.evaluate(CHART_BOXES):
        assert c["texts"], c
        for t in c["texts"]:
            assert t["left"] >= c["chart"]["left"] - 1 and t["right"] <= c["chart"]["right"] + 1, (c["id"], t)
        for t in c["xaxis"]:
            assert t["left"] >= c["chart"]["left"] - 1 and t["right"] <= c["chart"]["right"] + 1, (c["id"], t)


def test_the_page_never_scrolls_sideways(page):
    width = page.evaluate("() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})")
    assert width["scroll"] <= width["inner"], width


def test_wide_tables_scroll_in_their_own_box(page):
    boxes = page.evaluate("""async () => {
        const out = [];
        for (const id of ['summary-table', 'jobs-table']) {
            const t = document.getElementById(id), w = t.parentElement;
            w.scrollIntoView();  // the jobs table is laid out once it comes into view
            await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
            out.push({id: id, overflow: getComputedStyle(w).overflowX, scroll: w.scrollWidth,
                      client: w.clientWidth, table: t.getBoundingClientRect().width,
                      right: w.getBoundingClientRect().right});
        }
        return out; }""")
    inner = page.evaluate("() => window.innerWidth")
    for b in boxes:
        # two runs' cells with every metric never fit 1920 px: the table scrolls inside its box
        assert b["overflow"] == "auto", b
        assert b["scroll"] > b["client"] and b["table"] > b["client"], b
        assert b["right"] <= inner, b
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= inner


def test_long_names_are_shortened_with_the_full_name_on_hover(page):
    cells = page.evaluate("""(name) => [...document.querySelectorAll('#summary-table td.model, #jobs-table td.model')]
        .filter(td => td.textContent.includes(name)).map(td => {
            const e = td.querySelector('[title]') || td;
            return {title: e.getAttribute('title'), scroll: e.scrollWidth, client: e.clientWidth,
                    overflow: getComputedStyle(e).textOverflow, width: td.getBoundingClientRect().width};
        })""", LONG_MODEL)
    assert len(cells) == 2 * (1 + 3)  # each run's summary row and its three jobs
    for c in cells:
        assert c["title"] == LONG_MODEL, c
        assert c["overflow"] == "ellipsis" and c["scroll"] > c["client"], c  # shown cut, with "…"
        assert c["width"] < 400, c
    short = page.evaluate("""() => [...document.querySelectorAll('#summary-table td.model')]
        .filter(td => td.textContent.trim() === 'gemma-3-270m').map(td => {
            const e = td.querySelector('[title]') || td; return e.scrollWidth <= e.clientWidth; })""")
    assert short and all(short)  # a short name is shown whole


def test_the_layout_holds_after_the_window_shrinks(browser_context, report):
    page = browser_context.new_page()
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(report.path.as_uri())
    page.wait_for_selector("body[data-charts-rendered]", timeout=30_000)
    page.set_viewport_size({"width": 1366, "height": 768})
    page.wait_for_timeout(1500)  # Plotly's own resize, then the legends' fit
    try:
        for c in page.evaluate(CHART_BOXES):
            assert c["chart"]["right"] <= 1366, c
            if c["legend"]:
                legend, plot = c["legend"], c["plot"]
                assert plot["height"] >= 200 and legend["width"] * legend["height"] < plot["width"] * plot["height"], c
                assert legend["right"] <= c["chart"]["right"] + 1, c
        assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 1366
    finally:
        page.close()
