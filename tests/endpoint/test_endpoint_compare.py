"""``melt compare`` and ``melt history`` treat endpoint cells as any other: a nightly run against
an endpoint that became slower is caught. A scripted endpoint streams with a set gap between
chunks: 5 ms in the baseline, 40 ms in the run after."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from melt.cli.main import cli
from melt.errors import RegressionFound
from melt.runner.engine import run_experiment
from tests.endpoint.parts import ScriptedServer, endpoint_config, experiment, good_stream

SERVE = [{"name": "stream", "kind": "serve", "requests": 3, "n_predict": 8}]


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MELT_TEST_ENDPOINT_KEY", "sk-compare-test")
    gap = {"s": 0.005}
    server = ScriptedServer(lambda h, n: h.stream(good_stream(8), gap_s=gap["s"]))
    out = []
    try:
        dev = endpoint_config(tmp_path, "nightly", server.base_url)
        exp = experiment(tmp_path, [dev], SERVE, repetitions=4, name="nightly-run")
        for g in (0.005, 0.005, 0.005, 0.040):
            gap["s"] = g
            out.append(run_experiment(exp, results_dir=tmp_path / "results"))
    finally:
        server.close()
    return tmp_path / "results", out


def test_compare_and_history_catch_a_slower_endpoint(runs):
    results, (a, b, c, slow) = runs
    same = CliRunner().invoke(cli, ["compare", a.run_id, b.run_id, "--metric", "itl_ms_p50", "--metric",
                                    "decode_tps", "--default-floor", "50", "--results", str(results)])
    assert same.exit_code == 0, same.output
    out = CliRunner().invoke(cli, ["compare", c.run_id, slow.run_id, "--metric", "itl_ms_p50", "--metric",
                                   "decode_tps", "--results", str(results)])
    assert isinstance(out.exception, RegressionFound), out.output  # melt exits 2 on it
    assert "decode_tps" in out.output and "regression" in out.output
    hist = CliRunner().invoke(cli, ["history", "--metric", "decode_tps", "--json", "--min-size", "1",
                                    "--results", str(results)])
    assert hist.exit_code == 0, hist.output
    text = json.dumps(json.loads(hist.output))
    assert "nightly" in text and slow.run_id in text
