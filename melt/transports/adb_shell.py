"""An adb shell command read with bounds: a device cannot make melt hold more than it allows.

adbutils' ``shell2`` keeps everything the device prints, and its timeout
restarts with every read, so an endless stream never ends. Here the
``shell,v2`` packets (1 stdout, 2 stderr, 3 exit status) are read with one
deadline for the whole command and a limit on the bytes kept; a device
without shell v2 gets ``shell:`` with the exit status echoed after the output.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from adbutils.errors import AdbTimeout

from melt.errors import OutputTooLargeError

_EXIT_MARK = b"X4EXIT:"
_RECV = 1 << 16


@dataclass(frozen=True)
class ShellOutput:
    """What a finished adb shell command printed, and its exit status."""

    returncode: int
    stdout: bytes
    stderr: bytes


class _Reader:
    """Reads exactly n bytes at a time from an adb stream before one deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline

    def exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.some(min(_RECV, n - len(buf)))
            if not chunk:
                raise EOFError(f"the stream ended {n - len(buf)} bytes early")
            buf += chunk
        return bytes(buf)

    def some(self, n: int = _RECV) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AdbTimeout("adb shell deadline passed")
        self.sock.settimeout(left)
        try:
            return self.sock.recv(n)
        except socket.timeout:
            raise AdbTimeout("adb shell deadline passed") from None


def run_shell(device, script: str, *, timeout: float, limit: int, v2: bool = True) -> ShellOutput:
    """Run ``script`` on an adbutils ``device``; its exit status and output.

    ``v2``: the device speaks shell v2 (separate stderr, real exit status).
    Raises ``AdbTimeout`` past ``timeout`` s for the whole command,
    :class:`OutputTooLargeError` when stdout and stderr together pass
    ``limit`` bytes, adbutils' errors when the stream fails.
    """
    what = f"the output of {script[:80]!r} on {device.serial}"
    conn = device.open_transport(timeout=timeout)
    try:
        conn.send_command(f"shell,v2:{script}" if v2 else f"shell:{script}; echo {_EXIT_MARK.decode()}$?")
        conn.check_okay()
        reader = _Reader(conn.conn, time.monotonic() + timeout)
        return _read_v2(reader, what, limit) if v2 else _read_v1(reader, what, limit)
    finally:
        conn.close()


def _read_v2(reader: _Reader, what: str, limit: int) -> ShellOutput:
    out, err = bytearray(), bytearray()
    while True:
        header = reader.exact(5)
        kind, length = header[0], int.from_bytes(header[1:5], "little")
        if len(out) + len(err) + length > limit:
            raise OutputTooLargeError(what, limit)
        data = reader.exact(length) if length else b""
        if kind == 1:
            out += data
        elif kind == 2:
            err += data
        elif kind == 3:
            return ShellOutput(data[0] if data else 255, bytes(out), bytes(err))


def _read_v1(reader: _Reader, what: str, limit: int) -> ShellOutput:
    out = bytearray()
    while chunk := reader.some():
        out += chunk
        if len(out) > limit + 16:  # room for the exit mark after the output
            raise OutputTooLargeError(what, limit)
    at = out.rfind(_EXIT_MARK)
    if at < 0:
        return ShellOutput(255, bytes(out), b"")
    tail = bytes(out[at + len(_EXIT_MARK):]).strip()
    return ShellOutput(int(tail) if tail.isdigit() else 255, bytes(out[:at]), b"")
