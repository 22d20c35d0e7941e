"""The endpoint target against a real server: melt's own llama-server build serving Gemma 3 270M
on loopback with ``--api-key``. The metrics are held against the server's own timings; a refused
key, a server killed mid-stream and a delay added on the wire (a local TCP proxy) each show up
where they should; the key is in no stored file, no log line and no captured output."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from melt.runner.engine import run_experiment
from tests.endpoint.parts import DelayProxy, LlamaServer, endpoint_config, experiment



PROMPT = "Name three colours."
CHAT = {"name": "chat", "kind": "conversation", "conversation": 0, "turns": 2, "n_predict": 8}
SERVE = {"name": "stream", "kind": "serve", "prompt": PROMPT, "requests": 2, "n_predict": 8, "ignore_eos": True}


def run(tmp_path: Path, base_url: str, workloads, name: str = "ep", **endpoint):
    folder = tmp_path / name
    folder.mkdir()
    dev = endpoint_config(folder, "loopback", base_url, **endpoint)
    return run_experiment(experiment(folder, [dev], workloads, name=name), results_dir=folder / "results")


def requests_of(job) -> list[dict]:
    from melt.frameworks.llamacpp.stream_metrics import all_requests

    return all_requests(json.loads((Path(job["_dir"]) / "stdout.txt").read_text()))


def jobs_with_dirs(run_) -> list[dict]:
    out = []
    for job in run_.jobs():
        job["_dir"] = str(run_.job_dir(job["job_id"]))
        out.append(job)
    return out


def test_metrics_agree_with_the_servers_own_timings_and_the_key_is_nowhere(
        tmp_path, llama_server, key_in_env, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    r = run(tmp_path, llama_server.base_url, [CHAT, SERVE])
    jobs = {j["workload"]: j for j in jobs_with_dirs(r)}
    for job in jobs.values():
        assert job["status"] == "ok", job["reason"]
        m = job["metrics"]
        reqs = requests_of(job)
        for q in reqs:
            t = q["timings"]
            times = q["token_times_s"]
            # the client cannot see the first token before the server has prefilled the prompt,
            # and on loopback it sees it soon after
            ttft_ms = 1000 * (times[0] - q["sent_s"])
            assert t["prompt_ms"] <= ttft_ms < t["prompt_ms"] + 1500
            # every token the server says it generated arrived as one chunk, and usage says so too
            assert len(times) == t["predicted_n"] == q["usage"]["completion_tokens"]
            assert q["usage"]["prompt_tokens"] == t["prompt_n"] + t["cache_n"]
            # the stream lasted about as long as the server's own decode
            stream_ms = 1000 * (times[-1] - times[0])
            assert stream_ms <= t["predicted_ms"] * 1.3 + 100
            assert q["connect_ms"] < 100 and q["first_byte_s"] <= times[0]
        predicted = sum(q["timings"]["predicted_n"] for q in reqs)
        assert m["decode_tps"] == pytest.approx(1000 * predicted / sum(q["timings"]["predicted_ms"] for q in reqs))
        assert m["usage_completion_tokens"] == m["gen_tokens"]
        assert m["server_prefill_ms"] > 0 and 0 <= m["network_ttft_ms"] < 1500
        assert job["metrics_missing"]["energy_decode_j"] == "remote endpoint"
        assert job["provenance"]["device"]["kind"] == "endpoint"
    turns = jobs["chat"]["turns"]
    assert [t["turn"] for t in turns] == [0, 1]
    assert turns[1]["context_tokens"] > turns[0]["context_tokens"]  # the history went with turn 2
    out = capfd.readouterr()
    stored = [p for p in Path(r.dir).parent.rglob("*") if p.is_file() and key_in_env.encode() in p.read_bytes()]
    assert stored == []
    assert key_in_env not in out.out + out.err and key_in_env not in caplog.text


def test_a_refused_key_fails_the_job_with_the_servers_answer(tmp_path, llama_server, monkeypatch):
    monkeypatch.setenv("MELT_TEST_ENDPOINT_KEY", "sk-wrong-key-0123456789")
    r = run(tmp_path, llama_server.base_url, [SERVE])
    (job,) = r.jobs()
    assert job["status"] == "failed"
    assert "HTTP 401" in job["reason"] and "sk-wrong-key" not in job["reason"]


def test_a_delay_on_the_wire_shows_in_the_network_part_not_in_the_servers(
        tmp_path, llama_server_binary, gemma_model, key_in_env):
    # one slot keeping Gemma's whole context (--swa-full): after the first run the prompt is in its
    # cache, so every later prefill is a token or two and the server's part stays small and steady
    # however busy this machine is
    server = LlamaServer(llama_server_binary, gemma_model, key_in_env, tmp_path / "one-slot.log", slots=1,
                         extra=("--swa-full",))
    proxy = DelayProxy(server.port, delay_s=0.150)
    try:
        run(tmp_path, server.base_url, [SERVE], name="warm")
        delayed = run(tmp_path, f"http://127.0.0.1:{proxy.port}/v1", [SERVE], name="delayed")
        direct = run(tmp_path, server.base_url, [SERVE], name="direct")
    finally:
        proxy.close()
        server.stop()
    (a,), (b,) = direct.jobs(), delayed.jobs()
    assert a["status"] == b["status"] == "ok", (a["reason"], b["reason"])
    ma, mb = a["metrics"], b["metrics"]
    # 150 ms each way: about 300 ms more per round trip, at the first byte and before the first token
    for key in ("transport_rtt_ms", "ttfb_ms", "network_ttft_ms"):
        assert 250 <= mb[key] - ma[key] <= 900, (key, ma[key], mb[key])
    # the server's own prefill did not see it
    assert abs(mb["server_prefill_ms"] - ma["server_prefill_ms"]) < 100, (ma["server_prefill_ms"],
                                                                          mb["server_prefill_ms"])
    assert mb["ttft_ms"] - ma["ttft_ms"] >= 150  # what a user sees (its prefill varies a little)


def test_a_server_killed_mid_stream_fails_the_job(tmp_path, llama_server_binary, gemma_model, key_in_env):
    server = LlamaServer(llama_server_binary, gemma_model, key_in_env, tmp_path / "victim.log", slots=1)
    killed = []

    def kill_once_streaming(total: int) -> None:
        if total > 3000 and not killed:  # several chunks of the answer are through
            killed.append(total)
            server.proc.kill()

    proxy = DelayProxy(server.port, delay_s=0.0, on_upstream=kill_once_streaming)
    try:
        long = dict(SERVE, requests=1, n_predict=1500)
        r = run(tmp_path, f"http://127.0.0.1:{proxy.port}/v1", [long], name="killed")
    finally:
        proxy.close()
        server.stop()
    (job,) = r.jobs()
    assert killed, "the stream never got under way"
    assert job["status"] == "failed"
    assert "truncated" in job["reason"] or "connection failed" in job["reason"], job["reason"]
