"""Transport.forward: a host port reaching a server a phone command started."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

from melt.errors import TransportError
from melt.transports.adb import AdbTransport
from melt.transports.local import LocalTransport
from tests.helpers import need

pytestmark = pytest.mark.adb

# A one-connection-at-a-time echo server that binds a free port and writes it to a file.
ECHO = (
    "import socket,sys\n"
    "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(4)\n"
    "open(sys.argv[1]+'.tmp','w').write(str(s.getsockname()[1]))\n"
    "import os; os.rename(sys.argv[1]+'.tmp', sys.argv[1])\n"
    "while True:\n"
    "    c,_=s.accept()\n"
    "    while (d:=c.recv(65536)): c.sendall(d.upper())\n"
    "    c.close()\n"
)


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_adb_forward_reaches_a_phone_server_and_is_removed(adb_server, adb_serial, virtual_phone):
    transport = AdbTransport(adb_serial, server_port=adb_server.port)
    (virtual_phone.host_path("/data/local/tmp/echo.py")).write_text(ECHO)
    # the phone's userland has no python: run the system's interpreter by its path (the phone
    # sees the host's /usr, read-only, but not this checkout or its virtualenv)
    python = shutil.which("python3", path="/usr/bin:/bin")
    need(python is not None, "python3 in /usr/bin")
    proc = transport.start([str(python), "/data/local/tmp/echo.py", "/data/local/tmp/echo.port"])
    try:
        port = int(virtual_phone.wait_for_file("/data/local/tmp/echo.port", timeout=20))
        with transport.forward(port) as fwd:
            assert fwd.local_port > 0 and fwd.remote_port == port
            listed = adb_server.run("forward", "--list", timeout=10).stdout
            assert f"tcp:{fwd.local_port} tcp:{port}" in listed
            payload = bytes(range(97, 123)) * 5000  # larger than one adb packet
            for _ in range(2):  # two connections through the same forward
                with socket.create_connection(("127.0.0.1", fwd.local_port), timeout=10) as s:
                    assert _echo(s, payload) == payload.upper()
        assert f"tcp:{fwd.local_port} " not in adb_server.run("forward", "--list", timeout=10).stdout
        fwd.close()  # closing twice is fine
        with pytest.raises(ConnectionRefusedError):  # the host port is gone with the forward
            socket.create_connection(("127.0.0.1", fwd.local_port), timeout=2).close()
    finally:
        proc.kill()


def test_adb_forward_to_a_closed_port_gives_a_closed_connection(adb_server, adb_serial):
    transport = AdbTransport(adb_serial, server_port=adb_server.port)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    with transport.forward(dead) as fwd, socket.create_connection(("127.0.0.1", fwd.local_port), timeout=10) as s:
        s.settimeout(10)
        t0 = time.monotonic()
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 9


def test_forward_refuses_a_non_port(adb_server, adb_serial):
    transport = AdbTransport(adb_serial, server_port=adb_server.port)
    with pytest.raises(TransportError, match="not a TCP port"):
        transport.forward(70000)


def test_local_forward_is_the_port_itself():
    with LocalTransport().forward(8123) as fwd:
        assert (fwd.local_port, fwd.remote_port, fwd.url) == (8123, 8123, "http://127.0.0.1:8123")
    assert fwd.closed
