"""melt's own sync push: one read feeds the send and the sha256; re-pushes send nothing."""

from __future__ import annotations

import hashlib
import os

from melt.config.specs import DeviceSpec
from melt.devices.android import AndroidDevice
from melt.models import hashes


def test_push_hashed_sends_and_hashes_in_one_pass_into_new_folders(adb_server, virtual_phone, tmp_path, monkeypatch):
    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    spec = DeviceSpec(name="vp", kind="android", virtual={},
                      adb={"connect": virtual_phone.address, "server_port": adb_server.port})
    device = AndroidDevice.connect(spec)
    src = tmp_path / "w.bin"
    data = os.urandom(40 * 65536 + 123)  # whole chunks and a tail
    src.write_bytes(data)
    seen: list[int] = []
    digest = device.transport.push_hashed(src, "/data/local/tmp/new/deeper/w.bin",
                                          progress=lambda done, total: seen.append(done))
    assert digest == hashlib.sha256(data).hexdigest()
    assert seen[-1] == len(data) and seen == sorted(seen) and len(seen) == 3  # every MiB and the end
    back = tmp_path / "back.bin"
    device.transport.pull("/data/local/tmp/new/deeper/w.bin", back)
    assert back.read_bytes() == data

    # stage(): the first push hashes while sending, so the memo knows the file without a second read
    reads: list = []
    real = hashes.file_sha256
    monkeypatch.setattr(hashes, "file_sha256", lambda *a, **k: reads.append(a) or real(*a, **k))
    device.stage(src, category="models")
    assert reads == [] and device.bytes_pushed == 2 * len(data)
    device.stage(src, category="models")  # unchanged: nothing sent, nothing re-read
    assert reads == [] and device.bytes_pushed == 2 * len(data)
