"""Streamed workloads on the virtual phone with the real model: llama-server on the
phone, reached through adb forward, checked against itself (ITL against decode
speed, prefill against the history), a sustained run whose token rate drops by the
duty cycle's share where melt saw the phone throttle, and the server and its forward
cleaned up after failures and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from statistics import median

import pytest

from melt.devices.abi import host_abi
from melt.runner.engine import run_experiment
from melt.virtual.config import CpuParams, VirtualPhoneConfig
from tests.helpers import melt_child

pytestmark = [pytest.mark.adb, pytest.mark.slow]

PROMPT = "Explain in a few sentences why the sky is blue and why sunsets are red."


def phone_yaml(tmp_path: Path, phone, adb_server, name: str = "phone") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nkind: android\nbuild_profile: host\nworkdir: /data/local/tmp/melt\n"
        f"adb: {{connect: '{phone.address}', server_port: {adb_server.port}}}\n"
        "virtual: {}\ntelemetry: {idle_s: 0.5, skin_zone: skin}\n")
    return path


def marked_servers(phone) -> list[int]:
    """PIDs of llama-server processes the phone started (its marker is in their environment)."""
    marker = f"MELT_VIRTUAL_SERIAL={phone.address}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"llama-server" in cmd and marker in env.split(b"\0"):
            found.append(int(entry))
    return found


def forwards(adb_server) -> str:
    return adb_server.run("forward", "--list", timeout=10).stdout.strip()


@pytest.fixture(scope="module")
def host_build():
    from melt.frameworks.llamacpp.build import host_build

    return host_build()


def test_serve_and_conversations_measure_consistent_numbers(tmp_path, adb_server, adb_serial, virtual_phone,
                                                            host_build, gemma_model):
    exp = tmp_path / "e.yaml"
    exp.write_text(f"""
name: served
devices: [{phone_yaml(tmp_path, virtual_phone, adb_server)}]
models: [{{name: gemma, path: {gemma_model}}}]
workloads:
  - {{name: stream, kind: serve, prompt: "{PROMPT}", requests: 3, n_predict: 32, ignore_eos: true, threads: 2}}
  - {{name: pair, kind: serve, prompt: "{PROMPT}", requests: 2, concurrency: 2, n_predict: 16, ignore_eos: true,
      threads: 2}}
  - {{name: chat, kind: conversation, conversation: 1, turns: 3, n_predict: 24, ignore_eos: true, threads: 2}}
  - {{name: chat-nocache, kind: conversation, conversation: 1, turns: 3, n_predict: 24, ignore_eos: true,
      cache_prompt: false, threads: 2}}
repetitions: 1
warmup: 0
""")
    run = run_experiment(exp, results_dir=tmp_path / "r")
    jobs = {j["workload"]: j for j in run.jobs()}

    stream = jobs["stream"]
    assert stream["status"] == "ok", stream["reason"]
    m = stream["metrics"]
    assert m["requests"] == 3 and m["gen_tokens"] == 3 * 32
    assert 0 < m["transport_rtt_ms"] < m["ttft_ms"] < m["e2e_ms"]
    # the inter-token percentiles are those of the gaps inside each request, as the
    # host received the tokens (the wait for a request's first token is not a gap)
    transcript = json.loads((run.job_dir(stream["job_id"]) / "stdout.txt").read_text())
    gaps = sorted(1000.0 * (b - a) for r in transcript["requests"]
                  for a, b in zip(r["token_times_s"], r["token_times_s"][1:]))
    assert len(gaps) == 3 * 31
    assert m["itl_ms_p50"] == pytest.approx(median(gaps), rel=1e-6)
    assert gaps[int(0.89 * len(gaps))] <= m["itl_ms_p90"] <= gaps[int(0.91 * len(gaps)) + 1]
    assert m["itl_ms_mean"] == pytest.approx(sum(gaps) / len(gaps), rel=1e-6)
    # the host's inter-token gaps agree with the server's own decode speed: on average
    # exactly so; the median ignores the stalls a busy machine adds, so it runs faster
    assert 1000.0 / m["itl_ms_mean"] == pytest.approx(m["decode_tps"], rel=0.35)
    assert 0.7 * m["decode_tps"] < 1000.0 / m["itl_ms_p50"] < 3.0 * m["decode_tps"]
    assert "ttft_est_ms" not in m
    assert m["energy_prefill_j"] > 0 and m["energy_decode_j"] > 0
    names = [p["name"] for p in stream["phases"]]
    assert names[:2] == ["idle", "load"] and names.count("prefill") == 3 and names.count("decode") == 3
    assert all(p["source"] == "host-stream" for p in stream["phases"] if p["name"] != "idle")

    pair = jobs["pair"]  # two streams at once through one forward: one window for both
    assert pair["status"] == "ok", pair["reason"]
    assert pair["metrics"]["requests"] == 2 and pair["metrics"]["gen_tokens"] == 32
    assert [p["name"] for p in pair["phases"]][-1] == "serve"

    chat, nocache = jobs["chat"], jobs["chat-nocache"]
    assert chat["status"] == "ok" and nocache["status"] == "ok", (chat["reason"], nocache["reason"])
    turns = chat["turns"]
    assert [t["turn"] for t in turns] == [0, 1, 2]
    for before, after in zip(turns, turns[1:]):
        # the history holds the previous turn's prompt and the model's answer
        assert after["context_tokens"] > before["context_tokens"] + before["gen_tokens"]
        assert after["cached_tokens"] > 0 and after["prompt_tokens"] < after["context_tokens"]
    plain = nocache["turns"]
    assert [t["context_tokens"] for t in plain] == [t["context_tokens"] for t in turns]  # same replay
    for before, after in zip(plain, plain[1:]):  # without the cache, prefill grows with the history
        assert after["prompt_tokens"] > before["prompt_tokens"]
    assert all(t["prompt_tokens"] >= t["context_tokens"] - 1 for t in plain)
    assert sum(t["prompt_tokens"] for t in turns) < sum(t["prompt_tokens"] for t in plain)
    assert all(t["energy_j"] > 0 and t["ttft_ms"] > 0 and t["decode_tps"] > 0 for t in turns)
    assert chat["metrics"]["turns"] == 3 and chat["metrics"]["energy_conversation_j"] > 0

    assert marked_servers(virtual_phone) == [] and forwards(adb_server) == ""


#: f/f_max while the hot phone throttles: its duty cycle runs the work this fraction of the time
THROTTLE_FRACTION = 0.5

HOT = VirtualPhoneConfig(
    abi=host_abi(),  # runs this machine's build natively, like the other phones of these tests
    # the run's own heat stays far below the throttle point; heat injected
    # mid-run (die and body at HEAT_C) throttles it, and the body's heat keeps
    # the die above the release point until the run ends
    cpu=CpuParams(throttle_temp_c=40.0, release_temp_c=35.0, throttle_freq_fraction=THROTTLE_FRACTION),
)
HEAT_C = 45.0
#: seconds of full-speed decoding before the heat goes in
COOL_S = 7.0

#: how far the tok/s drop may sit from the throttle start melt detected: two 1 s
#: windows (the window that holds the start mixes both rates, a prefill can empty the next)
DROP_TOLERANCE_S = 2.0


def heat_once_serving(phone, adb_server, stop: threading.Event) -> None:
    """Wait until the phone's llama-server answers through its forward, then COOL_S
    more seconds, then heat the phone to HEAT_C (what a hot pocket would do)."""
    while not stop.is_set():
        for line in forwards(adb_server).splitlines():
            port = line.split()[1].removeprefix("tcp:")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        if not stop.wait(COOL_S):
                            phone.set_temperature(HEAT_C)
                        return
            except OSError:
                pass
        stop.wait(0.2)


def step_at(rates: list[float]) -> int:
    """Index of the first window after the best single step down (least squares)."""
    best, where = float("inf"), 1
    for k in range(1, len(rates)):
        left, right = rates[:k], rates[k:]
        ml, mr = sum(left) / len(left), sum(right) / len(right)
        sse = sum((r - ml) ** 2 for r in left) + sum((r - mr) ** 2 for r in right)
        if ml > mr and sse < best:
            best, where = sse, k
    return where


def test_sustained_run_throttles_and_the_run_shows_it(tmp_path, adb_server, virtual_phone_factory, host_build,
                                                    gemma_model):
    phone = virtual_phone_factory(HOT)
    serial = adb_server.connect(phone.address)
    stop = threading.Event()
    heater = threading.Thread(target=heat_once_serving, args=(phone, adb_server, stop), daemon=True)
    heater.start()
    try:
        exp = tmp_path / "e.yaml"
        # one thread: two compute threads on this 2-core machine stall each other
        # whenever it is busy (seconds without a token), which drowns the drop
        exp.write_text(f"""
name: sustained
devices: [{phone_yaml(tmp_path, phone, adb_server, "hot")}]
models: [{{name: gemma, path: {gemma_model}}}]
workloads:
  - {{name: hot, kind: sustained, duration_s: 24, window_s: 1, n_predict: 48, ignore_eos: true, threads: 1}}
repetitions: 1
warmup: 0
""")
        job = run_experiment(exp, results_dir=tmp_path / "r").jobs()[0]
    finally:
        stop.set()
        heater.join(10)
        adb_server.run("disconnect", serial, timeout=10)
    assert job["status"] == "ok", job["reason"]
    m, series = job["metrics"], job["series"]
    assert job["throttled_intervals"] and m["throttled"] == 1
    start = job["throttled_intervals"][0]["start_s"]
    end = job["throttled_intervals"][0]["end_s"]
    cool = [w["tps"] for w in series if w["end_s"] <= start]
    hot = [w["tps"] for w in series if w["start_s"] >= start and w["end_s"] <= end]
    shown = [(round(w["start_s"], 1), w["tps"], w["throttled"]) for w in series]
    assert len(cool) >= 3 and len(hot) >= 3, ("throttled too early or too late to compare", start, shown)
    # the duty cycle runs the work half the time: the rate halves (a little more,
    # as a token in flight waits out each stop), and it still decodes
    ratio = median(hot) / median(cool)
    assert 0.1 < ratio < THROTTLE_FRACTION + 0.2, (ratio, start, shown)
    # the drop is where melt saw the throttling begin, and when it says it began
    drop = series[step_at([w["tps"] for w in series])]["start_s"]
    assert abs(drop - start) <= DROP_TOLERANCE_S, (drop, start, shown)
    assert abs(m["time_to_first_throttle_s"] - (drop - series[0]["start_s"])) <= DROP_TOLERANCE_S, m
    # the sustained rate (the last quarter, all throttled) is the throttled one, not the peak's
    assert m["decode_tps_sustained_ratio"] < THROTTLE_FRACTION + 0.2, (m, shown)
    # the frequency melt read follows the cap: the throttled windows ran at most at the cap
    hot_freq = [w["cpufreq_khz"] for w in series if w["start_s"] >= start and w["end_s"] <= end]
    assert max(hot_freq) <= THROTTLE_FRACTION * HOT.cpu.max_freq_khz, hot_freq
    assert all("temp_c" in w for w in series)
    assert max(w["temp_c"] for w in series) > min(w["temp_c"] for w in series)


def test_ctrl_c_stops_the_server_and_removes_the_forward(tmp_path, adb_server, adb_serial, virtual_phone,
                                                         host_build, gemma_model):
    exp = tmp_path / "e.yaml"
    exp.write_text(f"""
name: interrupted
devices: [{phone_yaml(tmp_path, virtual_phone, adb_server)}]
models: [{{name: gemma, path: {gemma_model}}}]
workloads:
  - {{name: long, kind: sustained, duration_s: 300, n_predict: 32, threads: 1}}
repetitions: 1
warmup: 0
""")
    proc = melt_child("run", str(exp), "--results", str(tmp_path / "r"))
    deadline = time.monotonic() + 180
    while not (marked_servers(virtual_phone) and forwards(adb_server)):  # serving, through the forward
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while marked_servers(virtual_phone) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_servers(virtual_phone) == []
    assert forwards(adb_server) == ""
    manifest = json.loads(next((tmp_path / "r").glob("*/manifest.json")).read_text())
    assert manifest["status"] == "interrupted"
