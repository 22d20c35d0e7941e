"""On the virtual Jetson over the real sshd: a pushed file changed before melt checks it is refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from melt.config.loader import load_device
from melt.devices.registry import open_device
from melt.errors import DigestMismatchError


def test_a_file_changed_on_the_board_before_the_check_is_refused(trusted, device_config: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:
    device = open_device(load_device(str(device_config)))
    try:
        src = tmp_path / "model.gguf"
        src.write_bytes(os.urandom(100_000))
        other = os.urandom(100_000)
        real = device.transport.push

        def push_then_tamper(local, remote, **kw):
            real(local, remote, **kw)
            trusted.host_path(remote).write_bytes(other)  # same size, other bytes

        monkeypatch.setattr(device.transport, "push", push_then_tamper)
        with pytest.raises(DigestMismatchError, match=hashlib.sha256(other).hexdigest()) as caught:
            device.stage(src, category="models")
        assert "\n" not in str(caught.value)
        remote = f"{device.workdir()}/models/model.gguf"
        assert not trusted.host_path(remote).exists()
        monkeypatch.setattr(device.transport, "push", real)
        assert device.stage(src, category="models") == remote
        assert trusted.host_path(remote).read_bytes() == src.read_bytes()
    finally:
        device.close()
