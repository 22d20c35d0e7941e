"""An endpoint cell beside a device cell in the report: the "on device vs offloaded" charts of TTFT
and decode tok/s per target and the network table, measured in headless Chromium at 1366 and
1920 px like the rest of the report. Both cells are real: llama-server with Gemma on this machine
as the device (kind local), and the same build behind the endpoint with its key."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from melt.report import build_report
from melt.runner.engine import run_experiment
from tests.endpoint.parts import endpoint_config, experiment
from tests.report.conftest import chromium_context
from tests.report.test_report_layout_browser import CHART_BOXES

SERVE = {"name": "stream", "kind": "serve", "prompt": "Name three colours.", "requests": 2, "n_predict": 8,
         "ignore_eos": True, "threads": 2}


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    yield from chromium_context(tmp_path_factory)  # closed with this module: see chromium_context


@pytest.fixture(scope="module")
def report(tmp_path_factory, llama_server, api_key):
    import os

    root = tmp_path_factory.mktemp("offload")
    local = root / "here.yaml"
    local.write_text(yaml.safe_dump({"name": "here", "kind": "local", "build_profile": "host",
                                     "telemetry": {"enabled": False}}))
    remote = endpoint_config(root, "loopback", llama_server.base_url)
    os.environ["MELT_TEST_ENDPOINT_KEY"] = api_key
    try:
        run = run_experiment(experiment(root, [local, remote], [SERVE], repetitions=2, name="offload"),
                             results_dir=root / "results")
    finally:
        del os.environ["MELT_TEST_ENDPOINT_KEY"]
    assert all(j["status"] == "ok" for j in run.jobs()), [j["reason"] for j in run.jobs()]
    return build_report([run], root / "report.html")


def figures(report) -> dict:
    html = report.path.read_text()
    blob = re.search(r'<script type="application/json" id="melt-figures">(.*?)</script>', html, re.S)
    assert blob, "no chart data block"
    return json.loads(blob.group(1))


def test_the_offload_charts_put_each_target_side_by_side(report):
    figs = figures(report)
    for metric in ("ttft_ms", "decode_tps"):
        fig = figs[f"offload-{metric}"]
        xs = {x for trace in fig["data"] for x in trace["x"]}
        assert sorted(x.rsplit("/", 1)[-1] for x in xs) == ["here.yaml (on device)", "loopback.yaml (offloaded)"]
        assert all(y > 0 for trace in fig["data"] for y in trace["y"])
    html = report.path.read_text()
    assert 'id="offload"' in html and "server&#39;s prefill" in html and "network and queue" in html


def test_no_offload_section_without_an_endpoint_cell(tmp_path):
    from melt.analysis import synthetic as syn
    from melt.store.runs import ResultsStore

    run = syn.make_run(ResultsStore(tmp_path / "r"), [syn.Cell()], repetitions=2)
    info = build_report([run], tmp_path / "r.html")
    assert 'id="offload"' not in info.path.read_text()


@pytest.mark.browser
@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_offload_section_holds_its_layout(browser_context, report, size):
    page = browser_context.new_page()
    page.set_viewport_size({"width": size[0], "height": size[1]})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report.path.as_uri())
    page.wait_for_selector("body[data-charts-rendered]", timeout=30_000)
    page.wait_for_timeout(300)
    charts = {c["id"]: c for c in page.evaluate(CHART_BOXES)}
    for key in ("chart-offload-ttft_ms", "chart-offload-decode_tps"):
        c = charts[key]
        assert c["plot"] and c["plot"]["height"] >= 200 and c["plot"]["width"] >= 300, c
        for t in c["xaxis"] + c["texts"]:
            assert t["left"] >= c["chart"]["left"] - 1 and t["right"] <= c["chart"]["right"] + 1, (key, t)
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= size[0]
    assert not errors
    page.close()
