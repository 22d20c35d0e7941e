"""The quick start on the arm64 virtual phone: the phone's own build, emulated, end to end.

The phone is the one of ``device_configs/virtual-phone.yaml`` (ABI
arm64-v8a). ``melt run`` on ``experiments/quickstart-android.yaml`` (the
device pointed at this test's phone, the sizes cut to fit the test budget)
must choose the static ``arm64`` cross build by the ABI the phone reports,
push it, and run it under qemu-user; the binary pulled back from the phone is
ARM aarch64 by ``file``. A host build sent to the same phone is refused
before anything is pushed.

The arm64 build is cached under ``~/.cache/melt/builds``; the first time it
takes several minutes of both cores (see docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from melt.devices.abi import host_abi
from melt.virtual.config import load_config
from tests.helpers import ROOT, last_line, melt, show

pytestmark = [pytest.mark.adb, pytest.mark.slow,
              pytest.mark.skipif(host_abi() == "arm64-v8a", reason="arm64 runs natively here")]


@pytest.fixture(scope="module")
def arm64_build():
    from melt.frameworks.llamacpp.build import build_llamacpp

    return build_llamacpp("arm64")


@pytest.fixture
def phone_setup(tmp_path, adb_server, virtual_phone_factory):
    """The virtual phone of the device config, and that config pointed at it."""
    config_file = ROOT / "device_configs" / "virtual-phone.yaml"
    phone = virtual_phone_factory(load_config(config_file))
    device = yaml.safe_load(config_file.read_text())
    device["adb"] = {"connect": phone.address, "server_port": adb_server.port, "reconnect_timeout_s": 5}
    device["telemetry"]["idle_s"] = 0.5
    path = tmp_path / "virtual-phone.yaml"
    path.write_text(yaml.safe_dump(device))
    return phone, path


def quickstart(tmp_path: Path, device: Path, model: Path, **changes) -> Path:
    """experiments/quickstart-android.yaml on ``device`` and ``model``, with smaller sizes."""
    exp = yaml.safe_load((ROOT / "experiments" / "quickstart-android.yaml").read_text())
    exp["devices"] = [str(device)]
    exp["models"] = [{"name": "gemma", "path": str(model)}]
    bench = next(w for w in exp["workloads"] if w["kind"] == "bench")
    generate = next(w for w in exp["workloads"] if w["kind"] == "generate")
    bench.update(n_prompt=[16], n_gen=[8])
    generate.update(n_predict=8)
    exp.update(repetitions=1, warmup=0, **changes)
    path = tmp_path / "quickstart-android.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def test_quickstart_runs_the_arm64_build_under_emulation(tmp_path, adb_server, phone_setup,
                                                          arm64_build, gemma_model):
    phone, device = phone_setup
    results = tmp_path / "results"
    out = melt("run", str(quickstart(tmp_path, device, gemma_model)), "--results", str(results),
               timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = last_line(out.stdout)
    data = show(run_id, results)
    assert data["status"] == "complete", [j["reason"] for j in data["jobs"]]
    assert sorted(j["kind"] for j in data["jobs"]) == ["bench", "generate"]
    for job in data["jobs"]:
        assert job["simulated"] is True and job["emulated"] is True
        build = job["provenance"]["framework_build"]
        assert (build["profile"], build["abi"]) == ("arm64", "arm64-v8a")
        assert build["cmake_flags"]["GGML_CPU_ARM_ARCH"] == "armv8.2-a+dotprod+fp16"
        assert build["key"] == arm64_build.provenance["key"]
        device_props = job["provenance"]["device"]
        assert device_props["abi"] == "arm64-v8a" and device_props["emulated"] is True
        assert device_props["emulator"].startswith("qemu-aarch64 version ")
        assert job["metrics"]["decode_tps"] > 0 and job["metrics"]["prefill_tps"] > 0
    generate = next(j for j in data["jobs"] if j["kind"] == "generate")
    assert generate["metrics"]["gen_tokens"] == 7  # n_predict - 1 decode steps

    # what ran on the phone, pulled back: the arm64 build, byte for byte
    bench = next(j for j in data["jobs"] if j["kind"] == "bench")
    remote = bench["provenance"]["command"].split()[0]
    assert remote.startswith("/data/local/tmp/melt/bin/arm64-") and remote.endswith("/llama-bench")
    pulled = tmp_path / "llama-bench.pulled"
    serial = adb_server.connect(phone.address)
    got = adb_server.run("-s", serial, "pull", remote, str(pulled), timeout=120)
    assert got.returncode == 0, got.stderr
    kind = subprocess.run(["file", "-b", str(pulled)], capture_output=True, text=True).stdout
    assert "ARM aarch64" in kind and "statically linked" in kind, kind
    assert hashlib.sha256(pulled.read_bytes()).hexdigest() == \
        arm64_build.provenance["binaries"]["llama-bench"]["sha256"]

    shown = melt("results", "show", run_id, "--results", str(results))
    assert "(simulated, emulated)" in shown.stdout  # both labels beside the device
    report = tmp_path / "report.html"
    assert melt("report", run_id, "--results", str(results), "-o", str(report)).returncode == 0
    assert 'id="emulated-notice"' in report.read_text()


def test_a_host_build_for_the_arm64_phone_is_refused_before_pushing(tmp_path, adb_server, phone_setup):
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model

    host_build()
    phone, device = phone_setup
    model = write_tiny_model(tmp_path / "tiny.gguf", seed=5)
    experiment = quickstart(tmp_path, device, model, frameworks=[{"name": "llama.cpp", "profile": "host"}])
    results = tmp_path / "results"
    out = melt("run", str(experiment), "--results", str(results), timeout=300)
    assert out.returncode == 3, out.stdout + out.stderr
    data = show(last_line(out.stdout), results)
    reasons = {j["reason"] for j in data["jobs"]}
    assert len(reasons) == 1, reasons
    reason = reasons.pop()
    assert reason.startswith("refusing to run llama-bench on virtual-phone: the 'host' build is "
                             "ELF 64-bit x86-64"), reason
    assert "but virtual-phone runs arm64-v8a code; set build_profile: auto" in reason
    serial = adb_server.connect(phone.address)
    listing = adb_server.run("-s", serial, "shell", "ls /data/local/tmp/melt 2>&1")
    assert "bin" not in listing.stdout.split() and "models" not in listing.stdout.split()
    manifest = json.loads((results / data["run_id"] / "manifest.json").read_text())
    assert not manifest.get("staging")
