"""The ADB wire format as a device speaks it: packets, banner, shell v2, sync.

An ADB packet is a 24-byte little-endian header followed by a payload::

    command, arg0, arg1, data_length, data_check, magic   (6 x uint32)

``magic`` is ``command ^ 0xFFFFFFFF`` and ``data_check`` is the byte sum of the
payload modulo 2**32. Peers that negotiated version ``0x01000001`` or later
may leave ``data_check`` at zero; this device always fills it in.

Everything here is pure (bytes in, bytes out) so it is tested without sockets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------- packets

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_STLS = 0x534C5453

COMMAND_NAMES = {
    A_SYNC: "SYNC",
    A_CNXN: "CNXN",
    A_AUTH: "AUTH",
    A_OPEN: "OPEN",
    A_OKAY: "OKAY",
    A_CLSE: "CLSE",
    A_WRTE: "WRTE",
    A_STLS: "STLS",
}

#: Protocol versions: the original, and the one that may skip checksums.
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001

#: Largest payload this device accepts and sends (bytes).
MAX_PAYLOAD = 256 * 1024
#: Largest payload a version-1.0 peer is assumed to take (bytes).
MAX_PAYLOAD_V1 = 4 * 1024

HEADER = struct.Struct("<6I")
HEADER_SIZE = HEADER.size  # 24 bytes

#: Features this device announces in its banner.
FEATURES = ("shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir")


class ProtocolError(Exception):
    """The peer sent something that is not a valid ADB packet."""


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Byte sum of ``data`` modulo 2**32 (the header's ``data_check``)."""
    if len(data) < 256:
        return sum(data) & 0xFFFFFFFF
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


@dataclass(frozen=True)
class Packet:
    """One ADB packet: a command, two arguments and a payload."""

    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command, f"0x{self.command:08x}")

    def encode(self) -> bytes:
        """The packet on the wire: header (with checksum and magic) + payload."""
        return encode_packet(self.command, self.arg0, self.arg1, self.data)

    def __repr__(self) -> str:  # short: payloads can be 256 KiB
        return f"Packet({self.name}, {self.arg0}, {self.arg1}, {len(self.data)} bytes)"


def encode_packet(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """Encode one packet; ``data`` must fit the negotiated payload size."""
    header = HEADER.pack(
        command, arg0, arg1, len(data), checksum(data), command ^ 0xFFFFFFFF
    )
    return header + bytes(data)


def decode_header(raw: bytes) -> tuple[int, int, int, int, int]:
    """Parse a 24-byte header into ``(command, arg0, arg1, length, check)``.

    Raises :class:`ProtocolError` when the magic does not match the command.
    """
    if len(raw) != HEADER_SIZE:
        raise ProtocolError(f"header is {len(raw)} bytes, expected {HEADER_SIZE}")
    command, arg0, arg1, length, check, magic = HEADER.unpack(raw)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic 0x{magic:08x} for command 0x{command:08x}")
    if length > 16 * 1024 * 1024:
        raise ProtocolError(f"payload of {length} bytes is too large")
    return command, arg0, arg1, length, check


def decode_packet(raw: bytes, *, verify: bool = True) -> Packet:
    """Decode a whole packet (header + payload) from ``raw``.

    Raises :class:`ProtocolError` on a short buffer, bad magic or checksum.
    """
    command, arg0, arg1, length, check = decode_header(raw[:HEADER_SIZE])
    data = raw[HEADER_SIZE:HEADER_SIZE + length]
    if len(data) != length:
        raise ProtocolError(f"payload is {len(data)} bytes, header says {length}")
    if verify and check and checksum(data) != check:
        raise ProtocolError("payload checksum mismatch")
    return Packet(command, arg0, arg1, bytes(data))


def device_banner(props: dict[str, str], features: tuple[str, ...] = FEATURES) -> bytes:
    """The CNXN payload of a device: ``device::key=value;...;features=a,b``."""
    parts = [f"{k}={v}" for k, v in props.items()]
    parts.append("features=" + ",".join(features))
    return ("device::" + ";".join(parts)).encode()


def parse_banner(payload: bytes) -> tuple[str, dict[str, str]]:
    """Split a CNXN payload into its system type and its ``key=value`` props."""
    text = payload.rstrip(b"\0").decode(errors="replace")
    kind, _, rest = text.partition(":")
    _, _, props_text = rest.partition(":")
    props: dict[str, str] = {}
    for item in props_text.split(";"):
        key, sep, value = item.partition("=")
        if sep:
            props[key] = value
    return kind, props


# ----------------------------------------------------------------- shell v2

SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3
SHELL_CLOSE_STDIN = 4
SHELL_WINDOW_SIZE = 5

SHELL_HEADER = struct.Struct("<BI")


def shell_packet(kind: int, data: bytes) -> bytes:
    """One shell-protocol packet: 1-byte id, 4-byte length, data."""
    return SHELL_HEADER.pack(kind, len(data)) + data


class ShellPacketReader:
    """Reassembles shell-protocol packets from arbitrary byte chunks."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """Add ``chunk``; return every ``(id, data)`` now complete."""
        self._buf += chunk
        out: list[tuple[int, bytes]] = []
        while len(self._buf) >= SHELL_HEADER.size:
            kind, length = SHELL_HEADER.unpack_from(self._buf)
            end = SHELL_HEADER.size + length
            if len(self._buf) < end:
                break
            out.append((kind, bytes(self._buf[SHELL_HEADER.size:end])))
            del self._buf[:end]
        return out


@dataclass(frozen=True)
class ShellRequest:
    """A parsed ``shell[,args]:command`` service name."""

    v2: bool
    pty: bool | None  # None: the default (pty when the command is empty)
    term: str | None
    command: str

    @property
    def use_pty(self) -> bool:
        return self.pty if self.pty is not None else not self.command


def parse_shell_service(name: str) -> ShellRequest:
    """Parse ``shell:cmd`` or ``shell,v2,raw,TERM=xterm:cmd``.

    Raises :class:`ValueError` when ``name`` is not a shell service.
    """
    head, sep, command = name.partition(":")
    if not sep or not (head == "shell" or head.startswith("shell,")):
        raise ValueError(f"not a shell service: {name!r}")
    v2, pty, term = False, None, None
    for arg in head.split(",")[1:]:
        if arg == "v2":
            v2 = True
        elif arg == "pty":
            pty = True
        elif arg == "raw":
            pty = False
        elif arg.startswith("TERM="):
            term = arg[5:]
    return ShellRequest(v2=v2, pty=pty, term=term, command=command)


# ----------------------------------------------------------------- sync


SYNC_REQUEST = struct.Struct("<4sI")
SYNC_DATA_MAX = 64 * 1024
SYNC_STAT_V1 = struct.Struct("<4sIII")  # id, mode, size, mtime
SYNC_STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")  # id, error, dev, ino, mode, nlink, uid, gid, size, a/m/ctime
SYNC_DENT_V1 = struct.Struct("<4sIIII")  # id, mode, size, mtime, namelen
SYNC_DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")  # stat v2 fields + namelen
