"""The device side of an ADB transport over TCP, on asyncio.

:class:`AdbDeviceServer` listens on a loopback port. Each accepted connection
(the adb server after ``adb connect``) is a :class:`DeviceConnection`: it
answers the CNXN handshake with the device banner, then multiplexes streams.
Every OPEN names a service; the connection asks its ``resolve`` callable for a
coroutine that serves it on a :class:`Stream`.

Flow control follows the protocol: after sending a WRTE on a stream the
device waits for the peer's OKAY before sending the next one, and it sends its
own OKAY for a received WRTE only once the service has taken the data, so a
slow consumer pushes back on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Awaitable, Callable

from melt.virtual import adb_protocol as p

log = logging.getLogger(__name__)

#: A coroutine serving one opened stream; it returns when the service is done.
Service = Callable[["Stream"], Awaitable[None]]
#: Maps a service name (``shell,v2:ls``) to its coroutine, or None if unknown.
Resolver = Callable[[str], "Service | None"]


class StreamClosed(Exception):
    """The peer closed the stream (or the connection dropped)."""


class Stream:
    """One multiplexed ADB stream, as seen by a service."""

    def __init__(self, conn: "DeviceConnection", local_id: int, remote_id: int, name: str):
        self._conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.name = name
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._can_send = asyncio.Event()
        self._can_send.set()
        self._write_lock = asyncio.Lock()
        self.closed = False
        self._eof = False

    # -- service side
    async def read(self) -> bytes:
        """Next chunk the host wrote; ``b""`` once the host closed the stream."""
        if self._eof:
            return b""
        data = await self._incoming.get()
        if data is None:
            self._eof = True
            return b""
        if not self.closed:
            self._conn.send(p.A_OKAY, self.local_id, self.remote_id)
        return data

    async def write(self, data: bytes) -> None:
        """Send ``data`` in WRTE packets, waiting for the host's OKAY between them.

        Raises :class:`StreamClosed` when the host closed the stream.
        """
        view = memoryview(data)
        step = self._conn.max_payload
        async with self._write_lock:  # one writer at a time: packets never interleave
            for start in range(0, len(view), step):
                await self._can_send.wait()
                if self.closed:
                    raise StreamClosed(self.name)
                self._can_send.clear()
                self._conn.send(p.A_WRTE, self.local_id, self.remote_id, view[start:start + step])
                await self._conn.drain()

    async def close(self) -> None:
        """Close from the device side (sends CLSE once)."""
        if not self.closed:
            self.closed = True
            self._can_send.set()
            self._conn.send(p.A_CLSE, self.local_id, self.remote_id)
            self._conn.forget(self.local_id)
            with contextlib.suppress(ConnectionError):
                await self._conn.drain()

    # -- connection side
    def _remote_okay(self) -> None:
        self._can_send.set()

    def _remote_write(self, data: bytes) -> None:
        self._incoming.put_nowait(data)

    def _remote_close(self) -> None:
        self.closed = True
        self._can_send.set()
        self._incoming.put_nowait(None)


class DeviceConnection:
    """One TCP connection from an adb server to this device."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        banner: bytes,
        resolve: Resolver,
    ):
        self._reader = reader
        self._writer = writer
        self._banner = banner
        self._resolve = resolve
        self._streams: dict[int, Stream] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._next_id = 1
        self.version = p.A_VERSION_MIN
        self.max_payload = p.MAX_PAYLOAD_V1
        self.connected = False

    def send(self, command: int, arg0: int, arg1: int, data: bytes | memoryview = b"") -> None:
        """Queue one packet on the socket (no-op once the socket is closing)."""
        if self._writer.is_closing():
            return
        self._writer.write(p.encode_packet(command, arg0, arg1, bytes(data)))

    async def drain(self) -> None:
        """Wait until the socket's send buffer is below its high-water mark."""
        if self._writer.is_closing():
            raise StreamClosed("connection closed")
        await self._writer.drain()

    def forget(self, local_id: int) -> None:
        self._streams.pop(local_id, None)

    async def run(self) -> None:
        """Read packets until the peer goes away; then tear every stream down."""
        try:
            sock = self._writer.get_extra_info("socket")
            if sock is not None:  # small packets go out at once, as adbd's do
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                header = await self._reader.readexactly(p.HEADER_SIZE)
                command, arg0, arg1, length, check = p.decode_header(header)
                data = await self._reader.readexactly(length) if length else b""
                if check and self.version < p.A_VERSION_SKIP_CHECKSUM:
                    if p.checksum(data) != check:
                        raise p.ProtocolError("payload checksum mismatch")
                self._dispatch(p.Packet(command, arg0, arg1, data))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except p.ProtocolError as exc:
            log.warning("dropping connection: %s", exc)
        finally:
            self._teardown()
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    def _teardown(self) -> None:
        for stream in list(self._streams.values()):
            stream._remote_close()
        for task in list(self._tasks.values()):
            task.cancel()
        self._streams.clear()

    def _dispatch(self, pkt: p.Packet) -> None:
        if pkt.command == p.A_CNXN:
            self._teardown()
            self.version = min(pkt.arg0, p.A_VERSION) or p.A_VERSION_MIN
            self.max_payload = max(p.MAX_PAYLOAD_V1, min(pkt.arg1, p.MAX_PAYLOAD))
            self.connected = True
            self.send(p.A_CNXN, self.version, p.MAX_PAYLOAD, self._banner)
        elif not self.connected:
            return  # nothing but CNXN is valid before the handshake
        elif pkt.command == p.A_OPEN:
            self._open(pkt.arg0, pkt.data.rstrip(b"\0").decode(errors="replace"))
        elif pkt.command == p.A_OKAY:
            stream = self._streams.get(pkt.arg1)
            if stream is not None:
                stream._remote_okay()
        elif pkt.command == p.A_WRTE:
            stream = self._streams.get(pkt.arg1)
            if stream is None:
                self.send(p.A_CLSE, 0, pkt.arg0)
            else:
                stream._remote_write(pkt.data)
        elif pkt.command == p.A_CLSE:
            stream = self._streams.pop(pkt.arg1, None)
            if stream is not None:
                stream._remote_close()
                task = self._tasks.get(stream.local_id)
                if task is not None:
                    task.cancel()
        # AUTH/STLS are never asked for: this device does not require them.

    def _open(self, remote_id: int, name: str) -> None:
        service = self._resolve(name)
        if service is None:
            log.info("unknown service %r", name)
            self.send(p.A_CLSE, 0, remote_id)
            return
        local_id = self._next_id
        self._next_id += 1
        stream = Stream(self, local_id, remote_id, name)
        self._streams[local_id] = stream
        self.send(p.A_OKAY, local_id, remote_id)
        self._tasks[local_id] = asyncio.get_running_loop().create_task(
            self._serve(service, stream), name=f"adb-stream-{local_id}"
        )

    async def _serve(self, service: Service, stream: Stream) -> None:
        try:
            await service(stream)
        except (StreamClosed, ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # a bug in a service must not take the device down
            log.exception("service %r failed", stream.name)
        finally:
            self._tasks.pop(stream.local_id, None)
            with contextlib.suppress(Exception):
                await stream.close()


class AdbDeviceServer:
    """Listens on ``host:port`` and serves every ADB connection it accepts."""

    def __init__(self, banner: bytes, resolve: Resolver, host: str = "127.0.0.1", port: int = 0):
        self.banner = banner
        self.resolve = resolve
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, sock: "socket.socket | None" = None) -> int:
        """Listen (on ``sock`` when given, already bound); returns the port."""
        if sock is not None:
            self._server = await asyncio.start_server(self._accept, sock=sock)
        else:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_address=True
            )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = DeviceConnection(reader, writer, self.banner, self.resolve)
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await conn.run()
        finally:
            if task is not None:
                self._connections.discard(task)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
