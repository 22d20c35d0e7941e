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
Everything here runs on the host, on files the phone's programs can change,
so every path is confined to the phone's folder: ``..`` is resolved
lexically (it never climbs above the device's ``/``), a path outside the
device's folders does not exist, and no symlink is followed on the way
(:mod:`melt.virtual.confined`): a link is listed, stat'ed and replaced as a
link, never read or written through. Pushed files lose setuid/setgid bits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as st
from pathlib import PurePosixPath

from melt.virtual import adb_protocol as p
from melt.virtual import confined
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

    def _locate(self, path: str) -> PurePosixPath:
        rel = self.sandbox.locate(path)
        if rel is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return rel

    def _lstat(self, path: str) -> os.stat_result:
        return confined.lstat(self.sandbox.root, self._locate(path))

    async def _stat_v1(self, stream: Stream, path: str) -> None:
        try:
            r = self._lstat(path)
            msg = p.SYNC_STAT_V1.pack(b"STAT", r.st_mode, r.st_size & 0xFFFFFFFF, int(r.st_mtime))
        except OSError:
            msg = p.SYNC_STAT_V1.pack(b"STAT", 0, 0, 0)
        await stream.write(msg)

    async def _stat2(self, stream: Stream, path: str, *, follow: bool = True, tag: bytes = b"STA2") -> None:
        try:
            r = self._lstat(path)
            if follow and st.S_ISLNK(r.st_mode):
                raise OSError(errno.ELOOP, "symlinks are not followed")
            msg = _stat_v2(tag, r)
        except OSError as exc:
            msg = _stat_v2(tag, None, exc.errno or errno.EIO)
        await stream.write(msg)

    async def _lstat2(self, stream: Stream, path: str) -> None:
        await self._stat2(stream, path, follow=False, tag=b"LST2")

    def _entries(self, path: str) -> list[tuple[str, os.stat_result]]:
        out = []
        try:
            with confined.open_dir(self.sandbox.root, self._locate(path)) as fd:
                here = os.fstat(fd)
                out += [(".", here), ("..", here)]
                for name in sorted(os.listdir(fd)):
                    with contextlib.suppress(OSError):
                        out.append((name, os.stat(name, dir_fd=fd, follow_symlinks=False)))
        except OSError:
            return []
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

    def _open_read(self, path: str) -> int:
        parent, name = confined.split(self._locate(path))
        with confined.open_dir(self.sandbox.root, parent) as dfd:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        mode = os.fstat(fd).st_mode
        if not st.S_ISREG(mode):
            os.close(fd)
            raise OSError(errno.EISDIR if st.S_ISDIR(mode) else errno.EINVAL,
                          "Is a directory" if st.S_ISDIR(mode) else "Not a regular file")
        return fd

    async def _recv(self, stream: Stream, path: str) -> None:
        try:
            fd = self._open_read(path)
        except OSError as exc:
            await stream.write(_fail(f"open failed: {exc.strerror or exc}"))
            return
        with os.fdopen(fd, "rb") as f:
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
        error: str | None = None
        with contextlib.ExitStack() as stack:
            dfd, name, f, tmp = -1, "", None, ""
            if not self.sandbox.is_writable(path):
                error = "couldn't create file: Read-only file system"
            else:
                try:
                    parent, name = confined.split(self._locate(path))
                    dfd = stack.enter_context(confined.open_dir(self.sandbox.root, parent, create=True))
                    with contextlib.suppress(FileNotFoundError):
                        if st.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                            error = "couldn't create file: Is a directory"
                    if error is None and not st.S_ISLNK(mode):
                        tmp = f".{name}.melt-push"
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(tmp, dir_fd=dfd)
                        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o600, dir_fd=dfd)
                        f = stack.enter_context(os.fdopen(fd, "wb"))
                except OSError as exc:
                    error = f"couldn't create file: {exc.strerror or exc}"
            mtime, completed, link_target = 0, False, bytearray()
            while True:
                tag, length = p.SYNC_REQUEST.unpack(await reader.exactly(8))
                if tag == b"DATA":
                    data = await reader.exactly(length)
                    if f is not None and error is None:
                        f.write(data)
                    elif st.S_ISLNK(mode):
                        link_target += data
                elif tag == b"DONE":
                    mtime, completed = length, True
                    break
                else:
                    error = error or f"invalid data message {tag!r}"
                    break
            if error is None and completed:
                error = self._finish(dfd, name, tmp, f, mode, mtime, bytes(link_target))
            if f is not None and tmp and (error is not None or not completed):
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
        await stream.write(_fail(error) if error else b"OKAY" + bytes(4))

    @staticmethod
    def _finish(dfd: int, name: str, tmp: str, f: object, mode: int, mtime: int, link: bytes) -> str | None:
        """Put the pushed file (or symlink) in place in the folder ``dfd``; an error message or None."""
        try:
            if st.S_ISLNK(mode):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dfd)
                os.symlink(link.decode(errors="surrogateescape"), name, dir_fd=dfd)
                return None
            fileno = f.fileno()  # type: ignore[attr-defined]
            f.flush()  # type: ignore[attr-defined]
            # no setuid/setgid/sticky: the file lives on the host, in a folder of this user's
            os.fchmod(fileno, (st.S_IMODE(mode) & 0o777) or 0o644)
            os.utime(fileno, (mtime, mtime))
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            return None
        except OSError as exc:
            return f"couldn't create file: {exc.strerror or exc}"
