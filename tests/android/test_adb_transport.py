"""AdbTransport and AndroidDevice against the virtual phone through the real adb server."""

from __future__ import annotations

import hashlib

import pytest

from melt.config.specs import DeviceSpec
from melt.devices.android import AndroidDevice
from melt.errors import CommandTimeout, DeviceUnavailableError, RemoteCommandError
from melt.transports.adb import AdbTransport

pytestmark = pytest.mark.adb


@pytest.fixture
def transport(adb_server, adb_serial):
    return AdbTransport(adb_serial, server_port=adb_server.port)


def test_exit_codes_and_streams(transport):
    r = transport.run(["sh", "-c", "echo out; echo err >&2; exit 7"], check=False)
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    with pytest.raises(RemoteCommandError) as info:
        transport.run(["sh", "-c", "exit 3"])
    assert info.value.result.returncode == 3


def test_arguments_are_quoted(transport):
    nasty = ["a b", "it's", '"q"', "$HOME", "`id`", "; rm -rf /", "*"]
    r = transport.run(["printf", "%s\\n", *nasty], env={"X": "has space $y"}, cwd="/data/local/tmp")
    assert r.stdout.splitlines() == nasty
    r = transport.run(["sh", "-c", 'echo "$X"; pwd'], env={"X": "has space $y"}, cwd="/data/local/tmp")
    assert r.stdout.splitlines() == ["has space $y", "/data/local/tmp"]


def test_timeout(transport):
    with pytest.raises(CommandTimeout):
        transport.run(["sleep", "5"], timeout=1)


def test_background_process_start_wait_kill(transport):
    proc = transport.start(["sh", "-c", "echo started; exit 4"], stdout_path="/data/local/tmp/bg.out")
    assert proc.wait(timeout=20) == 4
    assert transport.run(["cat", "/data/local/tmp/bg.out"]).stdout == "started\n"
    sleeper = transport.start(["sleep", "60"], stdout_path="/data/local/tmp/sleep.out")
    assert sleeper.poll() is None
    sleeper.kill()
    state = transport.shell(f"grep '^State' /proc/{sleeper.pid}/status 2>/dev/null || echo gone").stdout
    assert state.strip() == "gone" or "Z" in state


def test_push_pull_round_trip(transport, tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(bytes(range(256)) * 4000)
    seen = []
    transport.push(src, "/data/local/tmp/x/blob.bin", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (src.stat().st_size, src.stat().st_size)
    back = tmp_path / "back.bin"
    transport.pull("/data/local/tmp/x/blob.bin", back)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def spec_for(adb_server, phone) -> DeviceSpec:
    return DeviceSpec(name="vp", kind="android", virtual={},
                      adb={"connect": phone.address, "server_port": adb_server.port, "reconnect_timeout_s": 3})


def test_android_device_properties_and_content_addressed_staging(adb_server, virtual_phone, tmp_path):
    device = AndroidDevice.connect(spec_for(adb_server, virtual_phone))
    props = device.properties()
    assert props["simulated"] is True and props["model"]
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x" * 300_000)
    remote = device.stage(model, category="models")
    assert remote == "/data/local/tmp/melt/models/m.gguf"
    assert device.bytes_pushed == 300_000
    again = AndroidDevice.connect(spec_for(adb_server, virtual_phone))
    assert again.stage(model, category="models") == remote
    assert again.bytes_pushed == 0  # same bytes already there
    model.write_bytes(b"y" * 300_000)  # same size, new content: sent again
    again.stage(model, category="models")
    assert again.bytes_pushed == 300_000
    # a file removed behind melt's back is sent again, whatever the manifest says
    again.transport.run(["rm", remote])
    third = AndroidDevice.connect(spec_for(adb_server, virtual_phone))
    third.stage(model, category="models")
    assert third.bytes_pushed == 300_000


def test_dead_phone_is_device_unavailable(adb_server, virtual_phone):
    device = AndroidDevice.connect(spec_for(adb_server, virtual_phone))
    virtual_phone.kill()
    with pytest.raises(DeviceUnavailableError):
        device.transport.run(["echo", "hi"], timeout=20)


def test_melt_devices_shows_the_virtual_phone(adb_server, virtual_phone, tmp_path):
    import json

    from tests.helpers import melt

    config = tmp_path / "device_configs"
    config.mkdir()
    (config / "vp.yaml").write_text(
        f"name: vp\nkind: android\nadb: {{connect: '{virtual_phone.address}', server_port: {adb_server.port}}}\n"
        "virtual: {}\n")
    out = melt("devices", "vp", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)["devices"][0]
    assert row["status"] == "ready" and row["simulated"] is True
    assert row["properties"]["model"] == "Melt Virtual Phone" and row["properties"]["android_version"]
    assert 0 < row["health"]["battery_pct"] <= 100 and 10 < row["health"]["temp_c"] < 80
    table = melt("devices", "vp", cwd=tmp_path)
    assert "Melt Virtual Phone" in table.stdout and "%" in table.stdout


def test_a_stream_costs_no_version_query_and_no_sleep(transport, tmp_path, monkeypatch):
    import adbutils._adb

    def forbidden(*args, **kwargs):
        raise AssertionError("adbutils queried the server version for a stream")

    slept = []
    monkeypatch.setattr(adbutils.AdbClient, "server_version", forbidden)
    monkeypatch.setattr(adbutils._adb.time, "sleep", lambda s: slept.append(s))
    assert transport.shell("echo hi").stdout == "hi\n"
    (tmp_path / "f").write_text("x" * 1000)
    transport.push(tmp_path / "f", "/data/local/tmp/melt-stream-test")
    transport.pull("/data/local/tmp/melt-stream-test", tmp_path / "g")
    assert (tmp_path / "g").read_text() == "x" * 1000
    assert slept == []
