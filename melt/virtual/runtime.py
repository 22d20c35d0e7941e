"""A virtual phone running in this process: server, sandbox and model together.

:func:`serve` is what ``python -m melt.virtual serve`` and
``melt virtual start android`` run. It binds the port first (so ``port=0``
picks a free one), prepares the phone's folder, starts the model thread and
the ADB device server, reports the address through ``on_ready`` and runs until
SIGTERM/SIGINT. On the way out it kills what the phone's shells still run and
removes its registry record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable

from melt.errors import MeltError
from melt.virtual import adb_protocol as p
from melt.virtual.adb_device import AdbDeviceServer, Service
from melt.virtual.config import VirtualPhoneConfig
from melt.virtual.emulation import setup_sandbox
from melt.virtual.proctree import become_subreaper, kill_marked, kill_tree
from melt.virtual.registry import PhoneRecord, phone_dir, remove_record, write_record
from melt.virtual.sandbox import Sandbox
from melt.virtual.services_shell import ShellServices
from melt.virtual.services_sync import SyncService
from melt.virtual.services_tcp import tcp_service
from melt.virtual.simulator import Simulator

log = logging.getLogger(__name__)

#: banner props adb shows in `adb devices -l`, plus the simulation label
BANNER_KEYS = ("ro.product.name", "ro.product.model", "ro.product.device", "ro.melt.virtual")


def check_port(port: int) -> None:
    """Raise :class:`MeltError` unless ``port`` is a TCP port number (0 picks a free one)."""
    if not 0 <= port <= 65535:
        raise MeltError(f"port {port} is out of range: use 0-65535 (0 picks a free port)")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0 picks a free port); reusable at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(16)
    sock.setblocking(False)
    return sock


class PhoneRuntime:
    """The parts of one running virtual phone."""

    def __init__(self, config: VirtualPhoneConfig, state_dir: Path, sock: socket.socket,
                 *, allow_unisolated: bool = False):
        self.config = config
        self.allow_unisolated = allow_unisolated
        self.state_dir = Path(state_dir)
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.address = f"{self.host}:{self.port}"
        self.dir = phone_dir(self.state_dir, self.port)
        self.sandbox = Sandbox(self.dir / "root", serial=self.address)
        self.props = config.all_props(self.port)
        self.spawned: set[int] = set()
        self.shell = ShellServices(self.sandbox, self.spawned)
        self.simulator: Simulator | None = None

    def banner(self) -> bytes:
        return p.device_banner({k: self.props[k] for k in BANNER_KEYS if k in self.props})

    def resolve(self, name: str) -> Service | None:
        """The coroutine serving ``name``, or None (the host then sees it refused)."""
        if name == "sync:":
            return SyncService(self.sandbox)
        if name.startswith("tcp:"):
            return tcp_service(name)
        return self.shell.resolve(name)

    def prepare(self) -> None:
        """Create the sandbox and check how commands will be isolated."""
        self.dir.mkdir(parents=True, exist_ok=True)
        left = kill_marked(self.sandbox.marker)
        if left:
            log.info("killed %d process(es) left by an earlier run on this port", left)
        self.sandbox.create(self.props)
        if self.sandbox.require_isolation(self.allow_unisolated) != "bwrap":
            log.warning("running unisolated, as allowed (%s): commands run on the host, "
                        "without the device file layout", self.sandbox.probe_error)
        emulation = setup_sandbox(self.sandbox, self.config.abi)
        log.info("%s", emulation.describe())
        self.props.update(emulation.props())
        self.sandbox.write_props(self.props)
        if self.sandbox.isolation == "bwrap":
            self.spawned.add(self.sandbox.start_init())  # waited for by the sandbox, not the reaper

    async def run(self, on_ready: Callable[[str], None]) -> None:
        become_subreaper()
        self.prepare()
        self.simulator = Simulator(self.config, self.sandbox, self.spawned)
        self.simulator.start()
        server = AdbDeviceServer(self.banner(), self.resolve, self.host, self.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        record = PhoneRecord(
            address=self.address, port=self.port, pid=os.getpid(), started_at=time.time(),
            root=str(self.sandbox.root), truth_log=str(self.simulator.truth_path),
            isolation=self.sandbox.isolation, abi=self.config.abi,
            emulation=self.sandbox.emulation.mode,
        )
        try:
            await server.start(self.sock)
            write_record(record, self.state_dir)
            on_ready(self.address)
            await stop.wait()
        finally:
            remove_record(self.state_dir, self.port, os.getpid())
            await server.close()
            self.simulator.stop()
            self.sandbox.stop_init()
            kill_tree(os.getpid())


def serve(
    config: VirtualPhoneConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    state_dir: Path,
    on_ready: Callable[[str], None] = lambda address: None,
    allow_unisolated: bool = False,
) -> None:
    """Run a virtual phone in this process until SIGTERM or SIGINT.

    Raises :class:`MeltError` for a port outside 0-65535, :class:`OSError` when
    it cannot listen, and :class:`~melt.virtual.sandbox.IsolationError` when
    bubblewrap does not work and ``allow_unisolated`` is false.
    """
    check_port(port)
    sock = bind_socket(host, port)
    runtime = PhoneRuntime(config, state_dir, sock, allow_unisolated=allow_unisolated)
    runtime.dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(runtime.dir / "phone.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("melt.virtual").addHandler(handler)
    logging.getLogger("melt.virtual").setLevel(logging.INFO)
    asyncio.run(runtime.run(on_ready))
