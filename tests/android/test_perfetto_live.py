"""A run of Gemma 3 270M on the virtual phone now, exported as a Perfetto trace: schema, rules, timebase."""

from __future__ import annotations

import pytest

from tests.analysis import trace_events
from tests.helpers import last_line, melt, show

pytestmark = [pytest.mark.adb, pytest.mark.slow]

EXPERIMENT = """
name: perfetto-live
devices: [{device}]
models: [{{name: gemma, path: {model}}}]
workloads:
  - {{name: bench, kind: bench, n_prompt: [32], n_gen: [16], threads: [1]}}
  - {{name: gen, kind: generate, prompt: "Hello", n_predict: 16, threads: 1}}
repetitions: 1
warmup: 0
"""


def test_gemma_on_the_virtual_phone_exports_a_valid_trace_on_its_clock(tmp_path, adb_server, virtual_phone,
                                                                      gemma_model):
    from melt.frameworks.llamacpp.build import host_build

    host_build()
    device = tmp_path / "phone.yaml"
    device.write_text(
        "name: phone\nkind: android\nbuild_profile: host\n"
        f"adb: {{connect: '{virtual_phone.address}', server_port: {adb_server.port}, reconnect_timeout_s: 5}}\n"
        "virtual: {}\ntelemetry: {idle_s: 0.5}\n")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(EXPERIMENT.format(device=device, model=gemma_model))
    results = tmp_path / "results"
    out = melt("run", str(experiment), "--results", str(results))
    assert out.returncode == 0, out.stderr
    run_id = last_line(out.stdout)
    jobs = show(run_id, results)["jobs"]
    assert sorted(j["kind"] for j in jobs) == ["bench", "generate"] and all(j["status"] == "ok" for j in jobs)

    done = melt("results", "export", run_id, "--results", str(results), "--format", "perfetto")
    assert done.returncode == 0, done.stderr
    trace = trace_events.load(done.stdout)
    trace_events.validate(trace)
    assert trace_events.problems(trace) == []
    events = trace["traceEvents"]
    named = {e["args"]["name"]: e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert sorted(named) == sorted(f"{j['device']} · gemma · {j['workload']} · rep 0 (simulated)" for j in jobs)
    for job in jobs:
        pid = named[f"{job['device']} · gemma · {job['workload']} · rep 0 (simulated)"]
        slices = {e["name"] for e in events if e["ph"] == "X" and e["pid"] == pid}
        assert {"prefill", "decode"} <= slices == {p["name"] for p in job["phases"]}
        counters = {e["name"] for e in events if e["ph"] == "C" and e["pid"] == pid}
        assert {"power_w", "cpu_util_pct", "rss_bytes"} <= counters
