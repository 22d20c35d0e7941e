"""The phase marks of melt's patched llama.cpp, from real runs of its three binaries on gemma3-270m."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import pytest

from melt.parsers.llama_bench import parse_llama_bench
from melt.parsers.llamacpp import parse_timings
from melt.parsers.marks import mark_windows, parse_marks
from melt.virtual.testing import free_port
from tests.conftest_models import gemma_model  # noqa: F401

pytestmark = pytest.mark.slow


def run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_llama_bench_marks_each_timed_repetition_and_not_the_depth_fill(llamacpp_build, gemma_model):
    bench = str(llamacpp_build.binaries["llama-bench"])
    t0 = time.time()
    out = run([bench, "-m", str(gemma_model), "-p", "32", "-n", "8", "-d", "64", "-r", "2", "-t", "1",
               "-o", "jsonl"])
    t1 = time.time()
    assert out.returncode == 0, out.stderr[-500:]
    marks = parse_marks(out.stderr)
    assert [m["name"] for m in marks] == ["prefill_start", "prefill_end"] * 2 + ["decode_start", "decode_end"] * 2
    assert all(t0 <= m["realtime_s"] <= t1 and "boottime_s" in m for m in marks)
    windows = mark_windows(marks)
    assert [(w["phase"], w["test"], w["rep"], w["tokens"]) for w in windows] == [
        ("prefill", 1, 1, 32), ("prefill", 1, 2, 32), ("decode", 2, 1, 8), ("decode", 2, 2, 8)]
    rows = parse_llama_bench(out.stdout)
    samples = [s / 1e9 for row in rows for s in row["samples_ns"]]
    assert len(rows) == 2 and len(samples) == len(windows) == 4
    assert all(row["n_depth"] == 64 for row in rows)
    # each window is llama-bench's own timed repetition, which leaves out the depth fill
    for w, timed in zip(windows, samples):
        assert abs((w["end"] - w["start"]) - timed) < 0.005 + 0.02 * timed, (w, timed)


def test_llama_completion_marks_prefill_and_decode(llamacpp_build, gemma_model):
    completion = str(llamacpp_build.binaries["llama-completion"])
    out = run([completion, "-m", str(gemma_model), "-p", "The capital of France is", "-n", "12", "-c", "256",
               "-t", "1", "-s", "1", "--temp", "0", "--ignore-eos", "-no-cnv", "--no-display-prompt",
               "--simple-io", "--log-colors", "off"])
    assert out.returncode == 0, out.stderr[-500:]
    windows = mark_windows(parse_marks(out.stderr))
    assert [w["phase"] for w in windows] == ["prefill", "decode"]
    prefill, decode = windows
    assert 0 <= decode["start"] - prefill["end"] < 1.0  # two marks in a row
    timings = parse_timings(out.stderr)[-1]
    assert prefill["tokens"] == timings["prompt_tokens"]
    assert decode["tokens"] == timings["gen_tokens"] == 11
    # the windows hold llama.cpp's own prompt-eval and eval times (plus sampling)
    assert prefill["end"] - prefill["start"] >= 0.9 * timings["prompt_ms"] / 1000
    assert decode["end"] - decode["start"] >= 0.9 * timings["decode_ms"] / 1000
    assert decode["end"] - decode["start"] <= (timings["decode_ms"] + timings["sample_ms"]) / 1000 + 0.05


def test_llama_server_marks_each_request(llamacpp_build, gemma_model, tmp_path):
    binary = llamacpp_build.binaries["llama-server"]  # the fixture asks for every target
    port = free_port()
    log = open(tmp_path / "server.err", "w+")
    proc = subprocess.Popen([str(binary), "-m", str(gemma_model), "-t", "1", "-c", "512", "--host", "127.0.0.1",
                             "--port", str(port), "-np", "1"], stdout=subprocess.DEVNULL, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "llama-server did not come up"
            time.sleep(0.2)
        spans = []
        for prompt in ("Hello there", "Once upon a time"):
            body = json.dumps({"prompt": prompt, "n_predict": 6, "temperature": 0}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body,
                                         headers={"Content-Type": "application/json"})
            t0 = time.time()
            with urllib.request.urlopen(req, timeout=60) as r:
                reply = json.loads(r.read())
            spans.append((t0, time.time(), reply))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log.seek(0)
    windows = mark_windows(parse_marks(log.read()))
    assert [w["phase"] for w in windows] == ["prefill", "decode"] * 2
    for (t0, t1, reply), (prefill, decode) in zip(spans, (windows[:2], windows[2:])):
        # the slot is released (decode_end) just after the reply is sent
        assert t0 <= prefill["start"] <= prefill["end"] <= decode["start"] <= decode["end"] <= t1 + 1.0
        assert prefill["task"] == decode["task"] and prefill["slot"] == decode["slot"] == 0
        assert decode["tokens"] == reply["tokens_predicted"] - 1
    assert windows[0]["task"] != windows[2]["task"]
    assert os.path.getsize(tmp_path / "server.err") > 0
