"""Android devices through the adb server, with adbutils.

Commands go through ``shell,v2`` so exit codes and stderr come back intact
(adbutils' v1 fallback appends ``; echo X4EXIT:$?``, which breaks on commands
that call ``exit``). Every argument is quoted with :func:`shlex.join` before it
reaches the device's shell: adbutils' own list joining uses Windows rules.

Every shell call or file transfer is one stream to the adb server. Two of
adbutils' per-stream costs are avoided: the device is addressed by its
transport id (adbutils otherwise opens an extra ``host:version`` connection
per stream to choose how to address a serial), and a stream that is done is
closed at once (adbutils sleeps 10 ms after every half-close).
"""

from __future__ import annotations

import hashlib
import shlex
import socket
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import adbutils
from adbutils._adb import AdbConnection
from adbutils.errors import AdbError, AdbTimeout

from melt.errors import (CommandTimeout, DeviceUnavailableError, OutputTooLargeError, RemoteCommandError,
                         TransportError)
from melt.transports.adb_shell import ShellOutput, run_shell
from melt.transports.adb_sync import SyncPushError, sync_pull, sync_push
from melt.transports.base import (MAX_COMMAND_OUTPUT_BYTES, MAX_PULL_BYTES, CommandResult, Forward,
                                  ShellProcess)

#: Called with (bytes sent so far, total bytes) during a push.
ProgressFn = Callable[[int, int], None]


def shell_line(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """One shell command line: ``cd DIR && K=V argv...``, every part quoted."""
    line = shlex.join([str(a) for a in argv])
    if env:
        line = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + " " + line
    if cwd:
        line = f"cd {shlex.quote(cwd)} && {line}"
    return line


class _Connection(AdbConnection):
    """An adbutils stream whose close does not sleep.

    The socket is half-closed (FIN, as adbutils does) and released at once;
    adbutils' own close then finds it released and skips its 10 ms wait.
    """

    def close(self) -> None:
        if not self.closed:
            sock = self.conn
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            sock.close()
        super().close()


class _Client(adbutils.AdbClient):
    """adbutils' client, handing out :class:`_Connection` streams."""

    def __init__(self, host: str, port: int, socket_timeout: float | None = None):
        super().__init__(host=host, port=port, socket_timeout=socket_timeout)
        self._timeout = socket_timeout

    def make_connection(self, timeout: float | None = None) -> AdbConnection:
        try:
            conn = _Connection(self.host, self.port)
        except TimeoutError:
            raise AdbTimeout("connect to adb server timeout") from None
        if timeout or self._timeout:
            conn.conn.settimeout(timeout or self._timeout)
        return conn


class AdbProcess(ShellProcess):
    """A background process on the phone, in its own process group."""

    # a killed process may stay a zombie under adbd for a while: that counts as gone
    alive_test = "[ -e /proc/{pid} ] && ! grep -q '^State:.*Z' /proc/{pid}/status 2>/dev/null"


class AdbTransport:
    """One Android device behind an adb server."""

    name = "adb"

    def __init__(
        self,
        serial: str,
        *,
        server_host: str = "127.0.0.1",
        server_port: int = 5037,
        connect: str | None = None,
        reconnect_timeout_s: float = 20.0,
    ):
        self.serial = serial
        self.connect_addr = connect
        self.reconnect_timeout_s = reconnect_timeout_s
        self._client = _Client(server_host, server_port, socket_timeout=30)
        self.bytes_pushed = 0
        self._v2: bool | None = None  # the device speaks shell v2 (asked once)
        self.reconnect()

    # ------------------------------------------------------------ connection

    def reconnect(self, timeout: float | None = None) -> None:
        """(Re)attach the device and wait until it is online.

        For network and virtual phones this runs ``adb connect``; a transport the
        server still holds as ``offline`` (the phone restarted) is disconnected
        and connected afresh. Raises ``DeviceUnavailableError`` after ``timeout`` s.
        """
        deadline = time.monotonic() + (self.reconnect_timeout_s if timeout is None else timeout)
        state, detail, known = "absent", "", False
        while True:
            try:
                state, transport_id = self._state()
                if state == "device":
                    # by transport id: no version query per stream (a new id after a reconnect)
                    self._device = (self._client.device(transport_id=transport_id) if transport_id
                                    else self._client.device(self.serial))
                    return
                if self.connect_addr:
                    if state == "offline":
                        self._client.disconnect(self.connect_addr)
                    detail = self._client.connect(self.connect_addr, timeout=10).strip()
            except (AdbError, OSError, EOFError) as exc:
                detail = str(exc) or type(exc).__name__
            known = known or state != "absent"
            if not known and "refused" in detail.lower():
                break  # never attached and nothing listens there: waiting would not help
            if time.monotonic() > deadline or not self.connect_addr:
                break  # a device that dropped off (a reboot, a restart) gets until the deadline
            time.sleep(0.3)
        raise DeviceUnavailableError(
            f"device {self.serial} is {state} (adb server {self._client.host}:{self._client.port})"
            + (f": {detail}" if detail else "")
        )

    def _state(self) -> tuple[str, int | None]:
        """The server's view of this serial (device, offline, unauthorized, ... or absent) and its transport id."""
        for info in self._client.list(extended=True):
            if info.serial == self.serial:
                return info.state, info.transport_id
        return "absent", None

    def _call(self, fn, *args, **kwargs):
        """Run an adbutils call, retrying once after reconnecting if the device dropped."""
        for attempt in (0, 1):
            try:
                return fn(*args, **kwargs)
            except AdbTimeout:
                raise
            except (AdbError, OSError, EOFError) as exc:  # EOFError: the device vanished mid-stream
                if attempt == 1 or not self.connect_addr:
                    raise DeviceUnavailableError(f"device {self.serial}: {exc or type(exc).__name__}") from None
                self.reconnect()
        raise AssertionError("unreachable")

    # -------------------------------------------------------------- commands

    def shell(self, script: str, *, timeout: float = 60, check: bool = True) -> CommandResult:
        t0 = time.monotonic()
        try:
            r = self._call(self._shell, script, timeout)
        except AdbTimeout:
            raise CommandTimeout(f"timed out after {timeout:g} s on {self.serial}: {script[:200]}") from None
        result = CommandResult(("sh", "-c", script), r.returncode, r.stdout.decode("utf-8", "replace"),
                               r.stderr.decode("utf-8", "replace"), time.monotonic() - t0)
        if check and result.returncode != 0:
            raise RemoteCommandError(result)
        return result

    def _shell(self, script: str, timeout: float) -> ShellOutput:
        """One shell stream, read up to :data:`MAX_COMMAND_OUTPUT_BYTES` (shell v2 where the device has it)."""
        if self._v2 is None:
            self._v2 = "shell_v2" in self._device.get_features().split(",")
        return run_shell(self._device, script, timeout=timeout, limit=MAX_COMMAND_OUTPUT_BYTES, v2=self._v2)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        r = self.shell(shell_line(argv, env=env, cwd=cwd), timeout=timeout, check=False)
        result = CommandResult(tuple(str(a) for a in argv), r.returncode, r.stdout, r.stderr, r.duration_s)
        if check and result.returncode != 0:
            raise RemoteCommandError(result)
        return result

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdout_path: str | None = None,
        stderr_path: str | None = None,
    ) -> AdbProcess:
        out = stdout_path or "/dev/null"
        err = stderr_path or "/dev/null"
        status = (stdout_path or f"/data/local/tmp/.melt-bg-{time.time_ns()}") + ".status"
        inner = (
            f"{shell_line(argv, env=env, cwd=cwd)} >{shlex.quote(out)} 2>{shlex.quote(err)} </dev/null; "
            f"echo $? >{shlex.quote(status)}"
        )
        script = (
            f"rm -f {shlex.quote(status)}; "
            f"setsid sh -c {shlex.quote(inner)} </dev/null >/dev/null 2>&1 & echo $!"
        )
        r = self.shell(script, timeout=30)
        try:
            pid = int(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise TransportError(f"could not start {argv[0]} on {self.serial}: {r.stdout!r}") from None
        return AdbProcess(self, pid, status)

    def kill(self, pid: int, signal: str = "TERM") -> None:
        self.shell(f"kill -{signal} {int(pid)} 2>/dev/null", check=False)

    def forward(self, remote_port: int) -> Forward:
        """``adb forward tcp:0 tcp:PORT``: the adb server picks a free host port.

        The forward belongs to the adb server, not to this process, so it is
        removed on :meth:`Forward.close` (``adb forward --remove``); a forward
        already gone (the device dropped off) is fine.
        """
        remote_port = int(remote_port)
        if not 0 < remote_port < 65536:
            raise TransportError(f"cannot forward to device port {remote_port}: not a TCP port")

        def install() -> int:
            # the server answers OKAY (transport), OKAY (forward) and the port it bound
            with self._device.open_transport(f"forward:tcp:0;tcp:{remote_port}") as c:
                c.check_okay()
                return int(c.read_string_block())

        try:
            local_port = self._call(install)
        except (AdbError, ValueError) as exc:
            raise TransportError(f"adb forward to {self.serial} port {remote_port} failed: {exc}") from None

        def remove() -> None:
            try:
                self._device.forward_remove(f"tcp:{local_port}", raise_non_found=False)
            except (AdbError, OSError, EOFError):
                pass

        return Forward(local_port, remote_port, remove)

    # ----------------------------------------------------------------- files

    def push(self, local: Path, remote: str, *, progress: ProgressFn | None = None, mode: int = 0o644) -> None:
        """Send ``local`` to ``remote`` and check that all its bytes arrived (size)."""
        local = Path(local)
        self.push_hashed(local, remote, progress=progress, mode=mode, hash=False)
        size = self._call(self._device.sync.stat, remote).size
        if size != local.stat().st_size:
            raise TransportError(f"push {local} -> {remote}: {size} of {local.stat().st_size} bytes arrived")

    def push_hashed(
        self,
        local: Path,
        remote: str,
        *,
        progress: ProgressFn | None = None,
        mode: int = 0o644,
        hash: bool = True,
    ) -> str | None:
        """Send ``local`` to ``remote``, hashing the bytes as they go; their sha256 (or ``None``).

        One read of the file serves both. Missing parent folders are made by
        adbd (or, on an old one that refuses, by ``mkdir -p`` and a retry).
        Does not check what arrived: the caller does (see ``AndroidDevice.stage``).
        """
        local = Path(local)
        digest = None

        def once() -> int:
            nonlocal digest
            hasher = hashlib.sha256() if hash else None
            sent = sync_push(self._device, local, remote, mode=mode, hasher=hasher, progress=progress)
            digest = hasher.hexdigest() if hasher else None
            return sent

        try:
            try:
                sent = self._call(once)
            except SyncPushError as exc:
                if "No such file" not in exc.reason and "Not a directory" not in exc.reason:
                    raise
                self.shell(f"mkdir -p {shlex.quote(remote.rsplit('/', 1)[0] or '/')}")
                sent = self._call(once)
        except SyncPushError as exc:
            raise TransportError(f"push {local} -> {self.serial}:{remote} failed: {exc.reason}") from None
        except (AdbError, OSError, EOFError) as exc:
            raise TransportError(f"push {local} -> {self.serial}:{remote} failed: {exc}") from None
        self.bytes_pushed += sent
        return digest

    def pull(self, remote: str, local: Path) -> None:
        """Copy ``remote`` to ``local``, at most :data:`MAX_PULL_BYTES` (a bigger file is not kept)."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)

        def once() -> None:
            with open(local, "wb") as fh:
                sync_pull(self._device, remote, fh.write, limit=MAX_PULL_BYTES)

        try:
            self._call(once)
        except OutputTooLargeError:
            local.unlink(missing_ok=True)
            raise
        except AdbError as exc:
            raise TransportError(f"pull {self.serial}:{remote} failed: {exc}") from None

    def read_text(self, remote: str) -> str:
        """A small device file's text (through sync, no shell), at most :data:`MAX_COMMAND_OUTPUT_BYTES`."""
        buf = bytearray()

        def once() -> None:
            buf.clear()
            sync_pull(self._device, remote, buf.extend, limit=MAX_COMMAND_OUTPUT_BYTES)

        try:
            self._call(once)
        except AdbError as exc:
            raise TransportError(f"read {self.serial}:{remote} failed: {exc}") from None
        return buf.decode("utf-8", "replace")
