"""The virtual phone through adbutils, as melt's adb transport reaches phones."""

from __future__ import annotations

import io
import stat

import pytest

from melt.virtual.testing import AdbServer

pytestmark = pytest.mark.adb


@pytest.fixture
def device(adb_server: AdbServer, adb_serial: str):
    return adb_server.client.device(adb_serial)


def test_shell_and_shell2(device) -> None:
    assert device.shell("echo hi") == "hi"
    result = device.shell2("echo out; echo err >&2; exit 7", v2=True)
    assert (result.returncode, result.stdout.strip(), result.stderr.strip()) == (7, "out", "err")
    assert device.shell2("false").returncode == 1  # the v1 path (adbutils appends echo $?)


def test_props(device) -> None:
    assert device.prop.model == "Melt Virtual Phone"
    assert device.getprop("ro.melt.virtual") == "1"
    assert device.getprop("ro.build.version.sdk") == "34"


def test_sync_push_pull_stat_list(device) -> None:
    payload = bytes(range(256)) * 4096
    device.sync.push(io.BytesIO(payload), "/data/local/tmp/dir/blob.bin")
    info = device.sync.stat("/data/local/tmp/dir/blob.bin")
    assert info.size == len(payload)
    assert stat.S_ISREG(info.mode)
    assert device.sync.read_bytes("/data/local/tmp/dir/blob.bin") == payload
    names = [entry.path for entry in device.sync.list("/data/local/tmp/dir")]
    assert "blob.bin" in names
    missing = device.sync.stat("/data/local/tmp/none")
    assert missing.mode == 0 and missing.size == 0


def test_sysfs_reads_through_sync(device) -> None:
    level = device.sync.read_text("/sys/class/power_supply/battery/capacity").strip()
    assert 0 <= int(level) <= 100
