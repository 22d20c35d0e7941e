"""Test helpers: an isolated adb server and virtual phones, as context managers.

Used by the pytest fixtures in ``tests/virtual/conftest.py`` (``adb_server``,
``virtual_phone``, ``adb_serial``) and usable from any test::

    with adb_server() as adb, virtual_phone(state_dir=tmp) as phone:
        serial = adb.connect(phone.address)
        adb.run("-s", serial, "shell", "echo hi")
        adb.client.device(serial).shell2("exit 7").returncode   # adbutils

The adb server listens on a free loopback port of its own (never 5037), and
is killed on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from melt.errors import MeltError
from melt.virtual.config import VirtualPhoneConfig
from melt.virtual.phone import VirtualPhone


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def adb_available() -> bool:
    """True when the ``adb`` command is installed."""
    return shutil.which("adb") is not None


@dataclass
class AdbServer:
    """A running adb server on ``port``; ``client`` is an adbutils client to it."""

    port: int

    @property
    def env(self) -> dict[str, str]:
        """Environment that points ``adb`` and adbutils at this server."""
        return {**os.environ, "ANDROID_ADB_SERVER_PORT": str(self.port)}

    @property
    def client(self):  # -> adbutils.AdbClient
        import adbutils

        return adbutils.AdbClient(host="127.0.0.1", port=self.port)

    def run(self, *args: str, timeout: float = 60, check: bool = False
            ) -> subprocess.CompletedProcess[str]:
        """Run ``adb -P PORT ARGS...`` (stdin empty); stdout/stderr as text."""
        return subprocess.run(
            ["adb", "-P", str(self.port), *args], capture_output=True, text=True,
            timeout=timeout, check=check, env=self.env, stdin=subprocess.DEVNULL,
        )

    def state(self, serial: str) -> str:
        """``device``, ``offline`` ... or ``absent`` when the server does not list it."""
        out = self.run("devices").stdout
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == serial:
                return parts[1]
        return "absent"

    def connect(self, address: str, timeout: float = 20.0) -> str:
        """``adb connect`` and wait until the device is online; returns its serial.

        Raises :class:`MeltError` if it is not online within ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            state = self.state(address)
            if state == "device":
                return address
            if state in ("absent", "offline"):
                if state == "offline":
                    self.run("disconnect", address, timeout=10)
                last = self.run("connect", address, timeout=10).stdout.strip()
            time.sleep(0.2)
        raise MeltError(f"{address} did not come online: {last or self.state(address)}")

    def wait_state(self, serial: str, states: tuple[str, ...], timeout: float = 20.0) -> str:
        """Wait until the server sees ``serial`` in one of ``states``; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(serial)
            if state in states:
                return state
            time.sleep(0.1)
        raise MeltError(f"{serial} is {self.state(serial)}, not {'/'.join(states)}")


@contextlib.contextmanager
def adb_server(port: int | None = None) -> Iterator[AdbServer]:
    """Start an isolated adb server on a free loopback port; kill it on exit."""
    server = AdbServer(port or free_port())
    done = server.run("start-server", timeout=30)
    if done.returncode != 0:
        raise MeltError(f"adb start-server failed: {done.stderr.strip()}")
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.run("kill-server", timeout=15)


@contextlib.contextmanager
def virtual_phone(
    config: VirtualPhoneConfig | str | Path | None = None,
    *,
    port: int = 0,
    state_dir: str | Path | None = None,
) -> Iterator[VirtualPhone]:
    """A started :class:`VirtualPhone` (own state folder unless given); stopped on exit."""
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="melt-virtual-"))
        phone = VirtualPhone(config, port=port, state_dir=state_dir)
        phone.start()
        stack.callback(phone.stop)
        yield phone
