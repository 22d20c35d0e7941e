"""File push and pull over adb's ``sync:`` service, the push written for throughput, the pull bounded.

adbutils' ``sync.push`` stats the target first, then sends 4 KB chunks with a
separate small write for each chunk's header, on a socket with Nagle's
algorithm on. Here one stream carries the ``SEND``, 64 KiB ``DATA`` chunks
(the protocol's maximum), each header and its data in one write, and
``DONE``, with ``TCP_NODELAY`` set; the file is read once, into one reused
buffer, and the same bytes feed an optional hash, so hashing costs no
second read. adbd creates missing parent folders itself (``fixed_push_mkdir``).
"""

from __future__ import annotations

import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from melt.errors import OutputTooLargeError, TransportError

CHUNK = 64 * 1024  # SYNC_DATA_MAX
PROGRESS_EVERY = 1 << 20  # bytes between progress calls
_HEADER = struct.Struct("<4sI")


class SyncPushError(TransportError):
    """The device refused a push (``FAIL`` from adbd): ``reason`` holds its message."""

    def __init__(self, remote: str, reason: str):
        self.remote, self.reason = remote, reason
        super().__init__(f"push to {remote} failed: {reason}")


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("the adb server closed the stream")
        out += chunk
    return bytes(out)


def sync_push(
    device: Any,
    local: Path,
    remote: str,
    *,
    mode: int = 0o644,
    hasher: Any | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 600,
) -> int:
    """Send ``local`` to ``remote`` on an adbutils ``device``; returns the bytes sent.

    ``hasher`` (a ``hashlib`` object) is fed every byte sent. Raises
    ``SyncPushError`` when adbd answers ``FAIL``, and adbutils' or the
    socket's errors when the stream breaks.
    """
    conn = device.open_transport(timeout=timeout_s)
    sock: socket.socket = conn.conn
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout_s)
        conn.send_command("sync:")
        conn.check_okay()
        spec = f"{remote},{stat.S_IFREG | mode}".encode()
        total = Path(local).stat().st_size
        buf = bytearray(_HEADER.size + CHUNK)
        view = memoryview(buf)
        payload = view[_HEADER.size:]
        sent = reported = 0
        pending = _HEADER.pack(b"SEND", len(spec)) + spec  # goes out with the first chunk
        with open(local, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(payload)
                if not n:
                    break
                _HEADER.pack_into(buf, 0, b"DATA", n)
                if hasher is not None:
                    hasher.update(payload[:n])
                if pending:
                    sock.sendall(pending + bytes(view[:_HEADER.size + n]))
                    pending = b""
                else:
                    sock.sendall(view[:_HEADER.size + n])
                sent += n
                if progress and (sent - reported >= PROGRESS_EVERY or sent == total):
                    progress(sent, total)
                    reported = sent
        sock.sendall(pending + _HEADER.pack(b"DONE", int(time.time())))
        tag, length = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
        if tag == b"FAIL":
            raise SyncPushError(remote, _read_exactly(sock, length).decode(errors="replace"))
        if tag != b"OKAY":
            raise SyncPushError(remote, f"unexpected answer {tag!r}")
        return sent
    finally:
        try:
            sock.close()  # adbd has answered: no need for adbutils' linger on close
        except OSError:
            pass


def sync_pull(
    device: Any,
    remote: str,
    sink: Callable[[bytes], Any],
    *,
    limit: int,
    timeout_s: float = 600,
) -> int:
    """Receive ``remote`` from an adbutils ``device``, handing each chunk to ``sink``; the bytes received.

    The device is not trusted with sizes: a ``DATA`` chunk over the protocol's
    64 KiB is a ``TransportError`` (adb's own client refuses it too), and a file
    over ``limit`` bytes an ``OutputTooLargeError``. ``FAIL`` from adbd (no
    such file ...) is a ``TransportError`` with its message.
    """
    conn = device.open_transport(timeout=timeout_s)
    sock: socket.socket = conn.conn
    try:
        sock.settimeout(timeout_s)
        conn.send_command("sync:")
        conn.check_okay()
        path = remote.encode()
        sock.sendall(_HEADER.pack(b"RECV", len(path)) + path)
        got = 0
        while True:
            tag, length = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
            if tag == b"DONE":
                return got
            if length > CHUNK:
                raise TransportError(f"pull {remote}: the device sent a {tag!r} of {length} bytes, "
                                     f"over the protocol's {CHUNK}")
            data = _read_exactly(sock, length)
            if tag == b"FAIL":
                raise TransportError(f"pull {remote} failed: {data.decode(errors='replace')}")
            if tag != b"DATA":
                raise TransportError(f"pull {remote}: unexpected answer {tag!r}")
            got += length
            if got > limit:
                raise OutputTooLargeError(f"the file {remote} from the device", limit)
            sink(data)
    finally:
        try:
            sock.close()
        except OSError:
            pass
