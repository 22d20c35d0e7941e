"""melt run on the virtual phone: build, push once, run, survive the phone dying."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import last_line, melt, melt_child, show, wait_for_journal

pytestmark = [pytest.mark.adb, pytest.mark.slow]

EXPERIMENT = """
name: android-e2e
devices: [{device}]
models: [{{name: tiny, path: {model}}}]
workloads:
  - {{name: bench, kind: bench, n_prompt: [16], n_gen: [8], threads: [1]}}
  - {{name: gen, kind: generate, prompt: "Hello", n_predict: 8, threads: 1}}
repetitions: {reps}
warmup: 0
"""


@pytest.fixture
def setup(tmp_path, adb_server, virtual_phone):
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model

    host_build()
    model = write_tiny_model(tmp_path / "tiny.gguf", seed=3)
    device = tmp_path / "phone.yaml"
    device.write_text(
        "name: phone\nkind: android\nbuild_profile: host\n"
        f"adb: {{connect: '{virtual_phone.address}', server_port: {adb_server.port}, reconnect_timeout_s: 5}}\n"
        "virtual: {}\ntelemetry: {idle_s: 0.3}\n"
    )

    def experiment(reps: int) -> Path:
        path = tmp_path / f"exp{reps}.yaml"
        path.write_text(EXPERIMENT.format(device=device, model=model, reps=reps))
        return path

    return experiment, tmp_path / "results"


def manifest(results: Path, run_id: str) -> dict:
    return json.loads((results / run_id / "manifest.json").read_text())


def test_run_on_phone_then_second_run_pushes_nothing(setup):
    experiment, results = setup
    out = melt("run", str(experiment(1)), "--results", str(results))
    assert out.returncode == 0, out.stderr
    first = last_line(out.stdout)
    data = show(first, results)
    assert data["status"] == "complete", [j["reason"] for j in data["jobs"]]
    assert sorted(j["kind"] for j in data["jobs"]) == ["bench", "generate"]
    for job in data["jobs"]:
        assert job["simulated"] is True
        assert job["metrics"]["decode_tps"] > 0
        assert job["provenance"]["device"]["model"] == "Melt Virtual Phone"
        assert job["provenance"]["command"].startswith("/data/local/tmp/melt/bin/")
    assert manifest(results, first)["staging"][0]["bytes_pushed"] > 200_000

    out = melt("run", str(experiment(1)), "--results", str(results))
    assert out.returncode == 0, out.stderr
    second = last_line(out.stdout)
    assert manifest(results, second)["staging"][0]["bytes_pushed"] == 0
    assert show(second, results)["status"] == "complete"


def test_phone_killed_mid_run_then_resume_after_restart(setup, virtual_phone, adb_server):
    experiment, results = setup
    proc = melt_child("run", str(experiment(6)), "--results", str(results))
    journal = wait_for_journal(results, 2, proc=proc)
    virtual_phone.kill()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err  # finished, with failed jobs
    run_id = journal.parent.name
    data = show(run_id, results)
    ok = [j for j in data["jobs"] if j["status"] == "ok"]
    failed = [j for j in data["jobs"] if j["status"] == "failed"]
    assert len(ok) >= 2 and failed
    assert all("unavailable" in j["reason"] for j in failed), [j["reason"] for j in failed]
    assert data["status"] == "complete-with-failures"

    virtual_phone.restart()
    out = melt("run", "--resume", run_id, "--results", str(results))
    assert out.returncode == 0, out.stderr
    data = show(run_id, results)
    assert data["status"] == "complete"
    assert len(data["jobs"]) == 12 and all(j["status"] == "ok" for j in data["jobs"])
