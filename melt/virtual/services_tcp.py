"""``tcp:PORT``: the stream an adb server opens for ``adb forward``.

Each connection the host makes to a forwarded port becomes one ADB stream
named ``tcp:PORT``; the device connects to ``PORT`` on its own loopback and
copies bytes both ways until either side closes. The virtual phone shares the
host's network namespace, so its loopback is the host's: a server a phone
command started is reached exactly as on a phone, through the adb server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from melt.virtual.adb_device import Service, Stream

_CHUNK = 64 * 1024


def tcp_service(name: str) -> Service | None:
    """The service for ``tcp:PORT`` (or ``tcp:PORT:localhost``), else None."""
    parts = name.split(":")
    if len(parts) not in (2, 3) or parts[0] != "tcp" or not parts[1].isdigit():
        return None
    if len(parts) == 3 and parts[2] not in ("localhost", "127.0.0.1", ""):
        return None
    port = int(parts[1])
    if not 0 < port < 65536:
        return None

    async def serve(stream: Stream) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return  # nothing listens there: the stream closes, as adbd's does
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def host_to_device() -> None:
            while data := await stream.read():
                writer.write(data)
                await writer.drain()

        async def device_to_host() -> None:
            while data := await reader.read(_CHUNK):
                await stream.write(data)

        tasks = [asyncio.ensure_future(host_to_device()), asyncio.ensure_future(device_to_host())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return serve
