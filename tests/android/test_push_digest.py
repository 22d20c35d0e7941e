"""A pushed file whose bytes on the phone are not the bytes sent is refused, removed and never run.

Against the virtual phone through the real adb server: once with the file
changed on the phone between the push and the check (same size, other bytes),
once with a phone whose ``sha256sum`` answers another digest, through a whole
``melt run`` whose job must fail with that reason and run nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from melt.config.specs import DeviceSpec
from melt.devices.android import MANIFEST, AndroidDevice
from melt.errors import DigestMismatchError
from tests.helpers import last_line, melt, show

pytestmark = pytest.mark.adb


def _device(adb_server, phone) -> AndroidDevice:
    spec = DeviceSpec(name="vp", kind="android", virtual={},
                      adb={"connect": phone.address, "server_port": adb_server.port})
    return AndroidDevice.connect(spec)


def test_a_file_changed_on_the_phone_before_the_check_is_refused(adb_server, virtual_phone, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    device = _device(adb_server, virtual_phone)
    src = tmp_path / "model.gguf"
    src.write_bytes(os.urandom(300_000))
    other = tmp_path / "other.gguf"
    other.write_bytes(os.urandom(300_000))  # same size: the size check alone would pass it
    real = device.transport.push_hashed

    def push_then_tamper(local, remote, **kw):
        digest = real(local, remote, **kw)
        real(other, remote, hash=False)  # the phone's copy changes before melt checks it
        return digest

    monkeypatch.setattr(device.transport, "push_hashed", push_then_tamper)
    with pytest.raises(DigestMismatchError) as caught:
        device.stage(src, category="models")
    message = str(caught.value)
    assert "\n" not in message and "not run" in message
    assert hashlib.sha256(other.read_bytes()).hexdigest() in message
    remote = "/data/local/tmp/melt/models/model.gguf"
    assert not virtual_phone.host_path(remote).exists()  # removed, so nothing can run it
    manifest = virtual_phone.host_path(f"/data/local/tmp/melt/{MANIFEST}")
    assert not manifest.exists() or remote not in manifest.read_text()

    monkeypatch.setattr(device.transport, "push_hashed", real)  # an honest push goes through
    assert device.stage(src, category="models") == remote
    assert virtual_phone.host_path(remote).read_bytes() == src.read_bytes()


@pytest.mark.slow
def test_a_phone_that_reports_another_digest_fails_the_job_without_running_it(adb_server, virtual_phone,
                                                                                tmp_path):
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model

    host_build()
    # the phone's own sha256sum now answers a digest of its choosing
    tool = virtual_phone.host_path("/system/bin/sha256sum")
    tool.unlink()
    tool.write_text('#!/system/bin/sh\necho "' + "0" * 64 + '  $1"\n')
    tool.chmod(0o755)
    model = write_tiny_model(tmp_path / "tiny.gguf", seed=3)
    device = tmp_path / "phone.yaml"
    device.write_text(
        "name: phone\nkind: android\nbuild_profile: host\n"
        f"adb: {{connect: '{virtual_phone.address}', server_port: {adb_server.port}}}\n"
        "virtual: {}\ntelemetry: {idle_s: 0.3}\n")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        f"name: digest\ndevices: [{device}]\nmodels: [{{name: tiny, path: {model}}}]\n"
        "workloads:\n  - {name: bench, kind: bench, n_prompt: [8], n_gen: [4], threads: [1]}\n"
        "repetitions: 1\nwarmup: 0\n")
    results = tmp_path / "results"
    out = melt("run", str(experiment), "--results", str(results), timeout=600)
    assert out.returncode == 3, out.stderr  # the run is stored, its job failed
    jobs = show(last_line(out.stdout), results)["jobs"]
    assert [j["status"] for j in jobs] == ["failed"]
    assert "the device holds sha256 '" + "0" * 64 + "'" in jobs[0]["reason"]
    assert "not run" in jobs[0]["reason"]
    assert not jobs[0]["metrics"] and not (jobs[0].get("provenance") or {}).get("command")
    # the refused binary is gone from the phone, and no staged file is recorded as good
    manifest = virtual_phone.host_path(f"/data/local/tmp/melt/{MANIFEST}")
    assert not manifest.exists() or manifest.read_text().strip() == ""
    assert not any(Path(virtual_phone.host_path("/data/local/tmp/melt/bin")).rglob("llama-bench"))
