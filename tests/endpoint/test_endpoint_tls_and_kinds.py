"""TLS is verified by default, a request in flight is capped at max_concurrency, and the sustained
kind runs against an endpoint as on a phone. A scripted server plays the endpoint (over https with
a certificate made for the test)."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from melt.runner.engine import run_experiment
from tests.endpoint.parts import ScriptedServer, endpoint_config, experiment, good_stream

SERVE = [{"name": "stream", "kind": "serve", "requests": 2, "n_predict": 4}]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("MELT_TEST_ENDPOINT_KEY", "sk-tls-test")


@pytest.fixture
def tls_server(tmp_path):
    cert, pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(pem),
                    "-out", str(cert)], check=True, capture_output=True)
    server = ScriptedServer(lambda h, n: h.stream(good_stream(4)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, pem)
    server.http.socket = ctx.wrap_socket(server.http.socket, server_side=True)
    yield server, cert
    server.close()


def one_job(tmp_path: Path, name: str, base_url: str, workloads=SERVE, **endpoint) -> dict:
    folder = tmp_path / name
    folder.mkdir()
    dev = endpoint_config(folder, "ep", base_url, timeout_s=5, **endpoint)
    (job,) = run_experiment(experiment(folder, [dev], workloads), results_dir=folder / "r").jobs()
    return job


def test_tls_is_verified_unless_told_otherwise(tmp_path, tls_server, key):
    server, cert = tls_server
    url = server.base_url.replace("http://", "https://")
    refused = one_job(tmp_path, "default", url)
    assert refused["status"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in refused["reason"]
    trusted = one_job(tmp_path, "ca", url, ca_file=str(cert))
    assert trusted["status"] == "ok", trusted["reason"]
    assert trusted["metrics"]["net_tls_ms"] > 0 and trusted["provenance"]["device"]["verify_tls"] is True
    unchecked = one_job(tmp_path, "off", url, verify_tls=False)
    assert unchecked["status"] == "ok" and unchecked["provenance"]["device"]["verify_tls"] is False


def test_requests_in_flight_never_exceed_max_concurrency(tmp_path, key):
    state = {"now": 0, "most": 0}
    lock = threading.Lock()

    def script(h, n):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            h.stream(good_stream(3), gap_s=0.05)
        finally:
            with lock:
                state["now"] -= 1

    server = ScriptedServer(script)
    try:
        wide = [{"name": "wide", "kind": "serve", "requests": 6, "n_predict": 3, "concurrency": 4}]
        job = one_job(tmp_path, "capped", server.base_url, wide, max_concurrency=2)
    finally:
        server.close()
    assert job["status"] == "ok", job["reason"]
    assert state["most"] == 2 and job["metrics"]["requests"] == 6


def test_a_sustained_run_gives_its_throughput_series(tmp_path, key):
    server = ScriptedServer(lambda h, n: h.stream(good_stream(6), gap_s=0.02))
    try:
        steady = [{"name": "steady", "kind": "sustained", "duration_s": 1.5, "window_s": 0.25, "n_predict": 6}]
        t0 = time.monotonic()
        job = one_job(tmp_path, "sustained", server.base_url, steady)
    finally:
        server.close()
    assert job["status"] == "ok", job["reason"]
    assert 1.5 <= time.monotonic() - t0 < 20
    assert len(job["series"]) >= 4 and all(w["tps"] >= 0 for w in job["series"])
    assert job["metrics"]["decode_tps_peak"] > 0
    assert job["metrics_missing"]["time_to_first_throttle_s"] == "remote endpoint"


def test_a_radio_model_plugs_in_where_the_radio_energy_is_absent(tmp_path, key):
    from melt.config.loader import load_device
    from melt.config.specs import FrameworkRef, ModelRef
    from melt.devices.registry import open_device
    from melt.frameworks.registry import get_framework
    from melt.runner.endpoint_executor import EndpointExecutor
    from melt.runner.matrix import Job

    class PerChunk:  # a made-up model: 1 mJ per chunk received
        name = "per-chunk test model"

        def energy_j(self, transcript):
            return 0.001 * sum(len(r["token_times_s"]) for r in transcript["requests"])

    server = ScriptedServer(lambda h, n: h.stream(good_stream(4)))
    try:
        device = open_device(load_device(str(endpoint_config(tmp_path, "ep", server.base_url))))
        job = Job("ep", FrameworkRef(), ModelRef(name="m", tiny_seed=0), "0" * 64, "stream", "serve",
                  {"requests": 2, "n_predict": 4}, 0)
        framework = get_framework("llama.cpp")
        _, _, without = EndpointExecutor().measure(device, framework, job)
        _, _, with_radio = EndpointExecutor(radio=PerChunk()).measure(device, framework, job)
    finally:
        server.close()
    assert "energy_radio_j" not in without.metrics and "not modelled" in \
        without.provenance["metrics_missing"]["energy_radio_j"]
    assert with_radio.metrics["energy_radio_j"] == pytest.approx(0.008)
    assert with_radio.provenance["endpoint"]["radio_model"] == "per-chunk test model"
    assert "energy_radio_j" not in with_radio.provenance["metrics_missing"]
