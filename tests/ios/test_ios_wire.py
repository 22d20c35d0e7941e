"""The virtual iPhone's loopback protocol at its edges: what either side sends is not trusted.

The device is served from a thread of this process (a real socket on
loopback); a hostile "phone" is a bare socket server that answers what a
test makes it answer.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from melt.config.specs import DeviceSpec, IosSpec
from melt.devices.ios import IosDevice
from melt.errors import DeviceUnavailableError, TransportError
from melt.transports.ios import AppNotInstalled, IosTransport
from melt.transports.ios_wire import LoopbackIosServices, parse_address
from melt.virtual.iphone import IphoneServer
from melt.virtual.iphone_config import VirtualIphoneConfig
from melt.virtual.iphone_device import IphoneDevice

BUNDLE = "org.melt.bench"


@pytest.fixture
def served(tmp_path):
    """(device, client services, IosDevice) of a virtual iPhone served from this process."""
    config = VirtualIphoneConfig()
    device = IphoneDevice(config, tmp_path / "root", tools={"llama-bench": Path("/bin/echo"),
                                                             "llama-completion": Path("/bin/echo")})
    device.start()
    server = IphoneServer(device, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    client = LoopbackIosServices(f"127.0.0.1:{server.server_address[1]}")
    spec = DeviceSpec(name="iphone", kind="ios", ios=IosSpec(virtual=client.address), virtual={})
    ios = IosDevice(spec, IosTransport(client, config.udid, BUNDLE))
    yield device, client, ios
    server.shutdown()
    server.server_close()
    device.stop()


def raw_call(address: str, request: dict, body: bytes = b"") -> dict:
    host, port = parse_address(address)
    with socket.create_connection((host, port), timeout=10) as s, s.makefile("rwb") as f:
        f.write(json.dumps(request).encode() + b"\n" + body)
        f.flush()
        return json.loads(f.readline())


def test_the_app_runs_and_its_files_come_back(served):
    _, _, ios = served
    run = ios.run_app(["-m", "melt/models/x.gguf"], out_dir="melt/out/a", sample_every_s=None)
    assert run.returncode == 0 and run.stdout.strip() == "-m melt/models/x.gguf"  # /bin/echo as llama-bench
    assert run.thermal == {"start": "nominal", "end": "nominal"}


def test_the_app_refuses_paths_outside_its_container(served):
    device, _, ios = served
    run = ios.run_app(["-m", "/etc/passwd", "--log-file", "../../x"], out_dir="melt/out/b", sample_every_s=None)
    assert run.returncode == 2 and "outside the app's container" in run.stderr
    assert not (device.root / "x").exists()


def test_a_folder_of_an_earlier_run_is_not_read_as_this_one(served):
    _, _, ios = served
    ios.run_app([], out_dir="melt/out/c", sample_every_s=None)
    with pytest.raises(TransportError, match="earlier run"):
        ios.run_app([], out_dir="melt/out/c", sample_every_s=None)


def test_paths_from_the_client_stay_in_the_container(served, tmp_path):
    device, client, _ = served
    for bad in ("../escape", "/etc/passwd", "a/../../b", "melt/.."):
        reply = raw_call(client.address, {"op": "push", "size": 1,
                                          "args": {"udid": device.config.udid, "bundle_id": BUNDLE, "remote": bad}},
                         b"x")
        assert reply["ok"] is False, bad
    assert not (device.root / "containers" / "escape").exists()
    reply = raw_call(client.address, {"op": "exists", "args": {"udid": device.config.udid,
                                                               "bundle_id": "../..", "remote": "etc"}})
    assert reply == {"ok": False, "error": "app not installed", "message": reply["message"]}


def test_a_symlink_in_the_container_is_never_followed(served, tmp_path):
    device, client, _ = served
    secret = tmp_path / "secret.txt"
    secret.write_text("host file")
    docs = device.root / "containers" / BUNDLE / "Documents"
    (docs / "melt").mkdir(parents=True)
    os.symlink(tmp_path, docs / "melt" / "out")  # what a compromised app could plant
    os.symlink(secret, docs / "leak.txt")
    for remote in ("melt/out/secret.txt", "leak.txt"):
        with pytest.raises(TransportError, match="no such file|not a file"):
            client.pull(device.config.udid, BUNDLE, remote, tmp_path / "got")
    with pytest.raises(TransportError):
        client.push(device.config.udid, BUNDLE, secret, "melt/out/planted.txt")
    assert not (tmp_path / "planted.txt").exists()


def test_unknown_calls_and_arguments_are_refused(served):
    device, client, _ = served
    assert raw_call(client.address, {"op": "shell", "args": {"cmd": "id"}})["ok"] is False
    assert raw_call(client.address, {"op": "launch", "args": {"udid": device.config.udid, "bundle_id": BUNDLE,
                                                              "args": [], "env": {}, "cwd": "/"}})["ok"] is False


def test_an_app_that_is_not_there_is_a_failed_job_reason_not_a_lost_device(served):
    device, client, ios = served
    device.uninstall(BUNDLE)
    with pytest.raises(AppNotInstalled, match="^app not installed: app org.melt.bench is not installed"):
        ios.prepare_app()
    assert not isinstance(AppNotInstalled("x"), TransportError)  # the worker does not mark the phone broken


class HostilePhone:
    """A socket on loopback that answers every call with ``reply`` bytes."""

    def __init__(self, reply: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.reply = reply
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                try:
                    conn.sendall(self.reply)
                except OSError:
                    pass


def test_a_reply_line_without_end_is_cut_off():
    phone = HostilePhone(b"{" + b" " * (200 * 1024))
    with pytest.raises(DeviceUnavailableError, match="longer than"):
        LoopbackIosServices(phone.address).list_devices()


def test_a_pulled_file_over_the_limit_is_refused(tmp_path):
    phone = HostilePhone(json.dumps({"ok": True, "result": None, "size": 10**12}).encode() + b"\n")
    with pytest.raises(TransportError, match="over the"):
        LoopbackIosServices(phone.address).pull("u", BUNDLE, "melt/out/stdout.txt", tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_device_info_is_cut_to_known_short_fields():
    info = {"udid": "u" * 10_000, "name": "n", "evil": "x", "simulated": 1}
    phone = HostilePhone(json.dumps({"ok": True, "result": info, "size": 0}).encode() + b"\n")
    got = LoopbackIosServices(phone.address).device_info("u")
    assert set(got) == {"udid", "name", "simulated"} and len(got["udid"]) == 400 and got["simulated"] is True


def test_an_output_file_over_the_bound_is_refused(served, monkeypatch):
    import melt.devices.ios as ios_module

    device, _, ios = served
    monkeypatch.setattr(ios_module, "MAX_OUTPUT", 8)
    with pytest.raises(TransportError, match="over 8 bytes"):
        ios.run_app(["a long line of output"], out_dir="melt/out/big", sample_every_s=None)


def test_only_loopback_addresses():
    for bad in ("10.0.0.5:15556", "example.org:1", "127.0.0.1"):
        with pytest.raises(TransportError, match="loopback"):
            LoopbackIosServices(bad)
