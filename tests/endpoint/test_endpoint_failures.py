"""An endpoint is untrusted: each way it can misbehave becomes a failed job with its status and
reason, retries happen only where the config allows them and are counted, and the key never
reaches a stored file, a reason or the output. A scripted server on loopback plays the endpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from melt.runner.engine import run_experiment
from tests.endpoint.parts import Scripted, ScriptedServer, chunk, endpoint_config, experiment, good_stream

KEY = "sk-melt-scripted-5f0c2a9e7d1b44c3a8e6"
SERVE = [{"name": "stream", "kind": "serve", "requests": 2, "n_predict": 5, "stall_timeout_s": 1.0}]


@pytest.fixture
def key(monkeypatch) -> str:
    monkeypatch.setenv("MELT_TEST_ENDPOINT_KEY", KEY)
    return KEY


def run_against(tmp_path: Path, script, workloads=SERVE, **endpoint):
    server = ScriptedServer(script)
    try:
        dev = endpoint_config(tmp_path, "scripted", server.base_url, timeout_s=5, **endpoint)
        run = run_experiment(experiment(tmp_path, [dev], workloads), results_dir=tmp_path / "results")
        return run.jobs(), server
    finally:
        server.close()


def assert_key_nowhere(folder: Path, *texts: str) -> None:
    hits = [p for p in folder.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert hits == [], f"the key is stored in {hits}"
    for t in texts:
        assert KEY not in t


def test_a_good_stream_gives_metrics_usage_and_the_reasons_of_what_is_absent(tmp_path, key):
    jobs, server = run_against(tmp_path, lambda h, n: h.stream(good_stream(5), gap_s=0.01))
    (job,) = jobs
    assert job["status"] == "ok", job["reason"]
    m = job["metrics"]
    assert m["gen_tokens"] == 10 and m["usage_completion_tokens"] == 10 and m["usage_prompt_tokens"] == 14
    assert m["retries"] == 0 and m["decode_tps"] > 0  # no server timings: the rate as the stream arrived
    assert job["provenance"]["endpoint"]["decode_tps_source"].startswith("the stream")
    missing = job["metrics_missing"]
    assert missing["energy_decode_j"] == "remote endpoint" and missing["temp_max_c"] == "remote endpoint"
    assert "radio" in missing["energy_radio_j"] and "not modelled" in missing["energy_radio_j"]
    assert "no server timings" in missing["network_ttft_ms"]
    # the key went to the server as a bearer token, and nowhere else
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in server.http.headers_seen)
    assert job["provenance"]["device"]["auth"] == "bearer key from $MELT_TEST_ENDPOINT_KEY"
    assert_key_nowhere(tmp_path / "results")


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_5xx_fail_the_job_with_the_status(tmp_path, key, status):
    jobs, server = run_against(tmp_path, lambda h, n: h.answer(status, b'{"error": {"message": "busy"}}'))
    (job,) = jobs
    assert job["status"] == "failed"
    assert f"HTTP {status}" in job["reason"] and "busy" in job["reason"]
    assert server.calls == 1  # retries: 0 (the default) means no retry


def test_retries_only_where_allowed_and_counted(tmp_path, key):
    def script(h: Scripted, n: int) -> None:
        if n <= 2:
            h.answer(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0"})
        else:
            h.stream(good_stream(3))

    jobs, server = run_against(tmp_path, script, retries=2, retry_backoff_s=0.01)
    (job,) = jobs
    assert job["status"] == "ok", job["reason"]
    assert job["metrics"]["retries"] == 2 and server.calls == 4  # 2 refused + 2 requests

    jobs, server = run_against(tmp_path, lambda h, n: h.answer(500, b"oops"), retries=1, retry_backoff_s=0.01)
    (job,) = jobs
    assert job["status"] == "failed" and "HTTP 500" in job["reason"] and "after 1 retry" in job["reason"]
    assert server.calls == 2


@pytest.mark.parametrize("events, words", [
    ([chunk("a"), b"data: {not json\n\n"], "not JSON"),
    ([chunk("a"), b'data: ["a", "list"]\n\n'], "not a JSON object"),
    ([b'data: {"choices": [{"delta": {"content": 42}}]}\n\n'], "not text"),
    ([chunk("a"), chunk("b")], "truncated"),  # the server hangs up before finish_reason
    ([chunk("a"), b'data: {"error": {"message": "model crashed"}}\n\n'], "model crashed"),
])
def test_a_malformed_or_truncated_stream_fails_the_job(tmp_path, key, events, words):
    jobs, _ = run_against(tmp_path, lambda h, n: h.stream(events))
    (job,) = jobs
    assert job["status"] == "failed" and words in job["reason"], job["reason"]


def test_a_silent_server_times_out(tmp_path, key):
    def script(h: Scripted, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        h.wfile.write(chunk("a"))
        h.wfile.flush()
        time.sleep(3)

    t0 = time.monotonic()
    jobs, _ = run_against(tmp_path, script)
    (job,) = jobs
    assert job["status"] == "failed" and "stalled" in job["reason"] and "1 s" in job["reason"]
    assert time.monotonic() - t0 < 10


def test_a_huge_stream_is_cut_at_the_configured_bound(tmp_path, key):
    events = [chunk("x" * 1000) for _ in range(200)] + [chunk(None, "length"), b"data: [DONE]\n\n"]
    jobs, _ = run_against(tmp_path, lambda h, n: h.stream(events), max_response_bytes=64 << 10)
    (job,) = jobs
    assert job["status"] == "failed" and "65,536 bytes" in job["reason"], job["reason"]


def test_a_server_that_echoes_the_key_does_not_get_it_stored(tmp_path, key):
    def script(h: Scripted, n: int) -> None:
        h.answer(401, json.dumps({"error": {"message": f"bad key {h.headers['Authorization']}"}}).encode())

    jobs, _ = run_against(tmp_path, script)
    (job,) = jobs
    assert job["status"] == "failed" and "HTTP 401" in job["reason"] and "***" in job["reason"]
    assert_key_nowhere(tmp_path / "results", job["reason"])


def test_a_missing_key_variable_is_one_clean_line(tmp_path, monkeypatch):
    from melt.cli.main import cli

    monkeypatch.delenv("MELT_TEST_ENDPOINT_KEY", raising=False)
    server = ScriptedServer(lambda h, n: h.stream(good_stream(3)))
    try:
        dev = endpoint_config(tmp_path, "scripted", server.base_url)
        exp = experiment(tmp_path, [dev], SERVE)
        out = CliRunner().invoke(cli, ["run", str(exp), "--results", str(tmp_path / "r")])
    finally:
        server.close()
    assert "MELT_TEST_ENDPOINT_KEY" in out.output and "is not set" in out.output
    assert "Traceback" not in out.output and server.calls == 0


def test_a_non_served_workload_is_refused_on_an_endpoint(tmp_path, key):
    jobs, server = run_against(tmp_path, lambda h, n: None,
                               workloads=[{"name": "b", "kind": "bench", "n_prompt": 8, "n_gen": 4}])
    (job,) = jobs
    assert job["status"] == "failed" and "remote endpoint" in job["reason"] and "bench" in job["reason"]


def test_an_internal_error_keeps_the_key_out_of_its_reason_and_traceback(tmp_path, key, monkeypatch):
    import melt.frameworks.llamacpp.served as served

    def broken(kind, params, client):
        raise ValueError(f"unexpected header Authorization: Bearer {KEY}")

    monkeypatch.setattr(served, "run_endpoint_client", broken)
    jobs, _ = run_against(tmp_path, lambda h, n: h.stream(good_stream(3)))
    (job,) = jobs
    assert job["status"] == "failed" and "internal error" in job["reason"] and "***" in job["reason"]
    tracebacks = list((tmp_path / "results").rglob("melt-traceback.txt"))
    assert tracebacks and "ValueError" in tracebacks[0].read_text()
    assert_key_nowhere(tmp_path / "results", job["reason"])
