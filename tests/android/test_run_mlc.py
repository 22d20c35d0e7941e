"""MLC-LLM jobs on the virtual phone through the stand-in, the way `melt run` does them."""

from __future__ import annotations

import pytest

from tests.helpers import last_line, melt, show

pytestmark = [pytest.mark.adb, pytest.mark.slow]

EXPERIMENT = """
name: mlc-e2e
devices: [{device}]
frameworks: [{{name: mlc-llm, profile: stand-in}}]
models: [{{name: tiny, path: {model}}}]
workloads:
  - {{name: chat, kind: generate, prompt: "Hello; $(touch /data/local/tmp/pwned)", n_predict: 8}}
repetitions: 2
warmup: 0
"""


def test_mlc_stand_in_runs_on_the_phone_and_says_so(tmp_path, adb_server, virtual_phone):
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model

    host_build()
    model = write_tiny_model(tmp_path / "tiny.gguf", seed=5)
    device = tmp_path / "phone.yaml"
    device.write_text(
        "name: phone\nkind: android\nbuild_profile: host\n"
        f"adb: {{connect: '{virtual_phone.address}', server_port: {adb_server.port}, reconnect_timeout_s: 5}}\n"
        "virtual: {}\ntelemetry: {idle_s: 0.3}\n"
    )
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPERIMENT.format(device=device, model=model))
    results = tmp_path / "results"
    out = melt("run", str(exp), "--results", str(results))
    assert out.returncode == 0, out.stderr
    data = show(last_line(out.stdout), results)
    assert data["status"] == "complete", [j["reason"] for j in data["jobs"]]
    assert len(data["jobs"]) == 2
    for job in data["jobs"]:
        assert job["framework"] == "mlc-llm"
        assert job["simulated"] is True and job["stand_in"] is True
        assert job["provenance"]["framework_build"]["stand_in"] is True
        assert job["metrics"]["decode_tps"] > 0 and job["metrics"]["prefill_tps"] > 0
    listing = adb_server.run("-s", virtual_phone.address, "shell", "ls /data/local/tmp/")
    assert listing.returncode == 0 and "pwned" not in listing.stdout  # the prompt ran nothing
