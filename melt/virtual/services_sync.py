"""The ``sync:`` service: file transfer and stat (SYNC.TXT, plus the v2 stats).

Requests are ``id(4) length(4) path`` in little-endian. Served here:

- ``STAT`` (lstat, v1 fields), ``STA2`` (stat) and ``LST2`` (lstat) with the
  v2 struct and an errno;
- ``LIST`` (``DENT`` entries) and ``LIS2`` (``DNT2``), each ended by a
  zero-filled ``DONE`` of the entry's size;
- ``SEND path,mode`` followed by ``DATA`` chunks and ``DONE mtime``; parent
  folders are created (``fixed_push_mkdir``); answered by ``OKAY`` or ``FAIL``;
- ``RECV path``: ``DATA`` chunks then ``DONE``, or ``FAIL msg``;
- ``QUIT`` ends the session.

Device paths go through the sandbox's mapping, so ``/data/local/tmp/x`` lands
in the phone's own folder and ``/sys/class/power_supply`` shows the model.
"""

from __future__ import annotations

import errno
import os
import stat as st
from pathlib import Path

from melt.virtual import adb_protocol as p
from melt.virtual.adb_device import Stream
from melt.virtual.sandbox import Sandbox

FLUSH_BYTES = 1024 * 1024


class _Reader:
    """Exact-size reads over a stream's arbitrary WRTE chunks."""

    def __init__(self, stream: Stream):
        self._stream = stream
        self._buf = bytearray()

    async def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = await self._stream.read()
            if not chunk:
                raise EOFError
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def _stat_v2(tag: bytes, result: os.stat_result | None, error: int = 0) -> bytes:
    if result is None:
        return p.SYNC_STAT_V2.pack(tag, error, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return p.SYNC_STAT_V2.pack(
        tag, 0, result.st_dev, result.st_ino, result.st_mode, result.st_nlink,
        result.st_uid, result.st_gid, result.st_size,
        int(result.st_atime), int(result.st_mtime), int(result.st_ctime),
    )


def _fail(message: str) -> bytes:
    data = message.encode()
    return b"FAIL" + len(data).to_bytes(4, "little") + data


class SyncService:
    """Serves one ``sync:`` stream on a sandbox."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox

    async def __call__(self, stream: Stream) -> None:
        reader = _Reader(stream)
        try:
            while True:
                tag, length = p.SYNC_REQUEST.unpack(await reader.exactly(8))
                if tag == b"QUIT":
                    return
                if length > 4096:
                    await stream.write(_fail(f"path too long: {length}"))
                    return
                path = (await reader.exactly(length)).decode(errors="surrogateescape")
                handler = {
                    b"STAT": self._stat_v1, b"STA2": self._stat2, b"LST2": self._lstat2,
                    b"LIST": self._list_v1, b"LIS2": self._list_v2,
                    b"RECV": self._recv,
                }.get(tag)
                if tag == b"SEND":
                    await self._send(stream, reader, path)
                elif handler is not None:
                    await handler(stream, path)
                else:
                    await stream.write(_fail(f"unknown sync request {tag!r}"))
                    return
        except EOFError:
            return

    def _host(self, path: str) -> Path:
        return self.sandbox.host_path(path)

    async def _stat_v1(self, stream: Stream, path: str) -> None:
        try:
            r = os.lstat(self._host(path))
            msg = p.SYNC_STAT_V1.pack(b"STAT", r.st_mode, r.st_size & 0xFFFFFFFF, int(r.st_mtime))
        except OSError:
            msg = p.SYNC_STAT_V1.pack(b"STAT", 0, 0, 0)
        await stream.write(msg)

    async def _stat2(self, stream: Stream, path: str, *, follow: bool = True, tag: bytes = b"STA2") -> None:
        try:
            r = os.stat(self._host(path), follow_symlinks=follow)
            msg = _stat_v2(tag, r)
        except OSError as exc:
            msg = _stat_v2(tag, None, exc.errno or errno.EIO)
        await stream.write(msg)

    async def _lstat2(self, stream: Stream, path: str) -> None:
        await self._stat2(stream, path, follow=False, tag=b"LST2")

    def _entries(self, path: str) -> list[tuple[str, os.stat_result]]:
        host = self._host(path)
        out = []
        try:
            names = [".", ".."] + sorted(os.listdir(host))
        except OSError:
            return out
        for name in names:
            try:
                out.append((name, os.lstat(host / name)))
            except OSError:
                continue
        return out

    async def _list_v1(self, stream: Stream, path: str) -> None:
        buf = bytearray()
        for name, r in self._entries(path):
            raw = name.encode(errors="surrogateescape")
            buf += p.SYNC_DENT_V1.pack(b"DENT", r.st_mode, r.st_size & 0xFFFFFFFF,
                                       int(r.st_mtime), len(raw)) + raw
        buf += p.SYNC_DENT_V1.pack(b"DONE", 0, 0, 0, 0)
        await stream.write(bytes(buf))

    async def _list_v2(self, stream: Stream, path: str) -> None:
        buf = bytearray()
        for name, r in self._entries(path):
            raw = name.encode(errors="surrogateescape")
            buf += _stat_v2(b"DNT2", r) + len(raw).to_bytes(4, "little") + raw
        buf += p.SYNC_DENT_V2.pack(b"DONE", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        await stream.write(bytes(buf))

    async def _recv(self, stream: Stream, path: str) -> None:
        host = self._host(path)
        try:
            f = open(host, "rb")
        except OSError as exc:
            await stream.write(_fail(f"open failed: {exc.strerror or exc}"))
            return
        with f:
            if os.path.isdir(host):
                await stream.write(_fail("open failed: Is a directory"))
                return
            buf = bytearray()
            while chunk := f.read(p.SYNC_DATA_MAX):
                buf += b"DATA" + len(chunk).to_bytes(4, "little") + chunk
                if len(buf) >= FLUSH_BYTES:
                    await stream.write(bytes(buf))
                    buf.clear()
            buf += b"DONE" + bytes(4)
            await stream.write(bytes(buf))

    async def _send(self, stream: Stream, reader: _Reader, spec: str) -> None:
        path, _, mode_text = spec.rpartition(",")
        if not path:
            path, mode_text = spec, "33188"
        try:
            mode = int(mode_text)
        except ValueError:
            mode = 0o100644
        host = self._host(path)
        error: str | None = None
        if not self.sandbox.is_writable(path):
            error = "couldn't create file: Read-only file system"
        elif host.is_dir():
            error = "couldn't create file: Is a directory"
        f = None
        link_target = bytearray()
        tmp = host.with_name(f".{host.name}.melt-push")
        if error is None and not st.S_ISLNK(mode):
            try:
                host.parent.mkdir(parents=True, exist_ok=True)
                f = open(tmp, "wb")
            except OSError as exc:
                error = f"couldn't create file: {exc.strerror or exc}"
        mtime, completed = 0, False
        try:
            while True:
                tag, length = p.SYNC_REQUEST.unpack(await reader.exactly(8))
                if tag == b"DATA":
                    data = await reader.exactly(length)
                    if f is not None:
                        f.write(data)
                    elif st.S_ISLNK(mode):
                        link_target += data
                elif tag == b"DONE":
                    mtime, completed = length, True
                    break
                else:
                    error = error or f"invalid data message {tag!r}"
                    break
        finally:
            if f is not None:
                f.close()
                if error is not None or not completed:
                    tmp.unlink(missing_ok=True)
        if error is None:
            try:
                if st.S_ISLNK(mode):
                    host.parent.mkdir(parents=True, exist_ok=True)
                    host.unlink(missing_ok=True)
                    os.symlink(link_target.decode(errors="surrogateescape"), host)
                else:
                    os.replace(tmp, host)
                    os.chmod(host, st.S_IMODE(mode) or 0o644)
                    os.utime(host, (mtime, mtime))
            except OSError as exc:
                error = f"couldn't create file: {exc.strerror or exc}"
                tmp.unlink(missing_ok=True)
        await stream.write(_fail(error) if error else b"OKAY" + bytes(4))
