"""The ADB wire format, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from melt.virtual import adb_protocol as p


def test_header_layout_and_checksum() -> None:
    raw = p.encode_packet(p.A_OPEN, 5, 0, b"shell:ls\0")
    command, arg0, arg1, length, check, magic = struct.unpack("<6I", raw[:24])
    assert (command, arg0, arg1, length) == (p.A_OPEN, 5, 0, 9)
    assert check == sum(b"shell:ls\0")
    assert magic == p.A_OPEN ^ 0xFFFFFFFF
    assert raw[:4] == b"OPEN"


def test_large_payload_checksum_matches_plain_sum() -> None:
    data = bytes(range(256)) * 1000
    assert p.checksum(data) == sum(data) & 0xFFFFFFFF


@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_packet_round_trip(data: bytes, arg0: int, arg1: int) -> None:
    pkt = p.decode_packet(p.encode_packet(p.A_WRTE, arg0, arg1, data))
    assert (pkt.command, pkt.arg0, pkt.arg1, pkt.data) == (p.A_WRTE, arg0, arg1, data)


U32 = st.integers(0, 2**32 - 1)


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """24 bytes: pure garbage, or a header whose magic and length may each be right or wrong."""
    if draw(st.booleans()):
        return draw(st.binary(min_size=24, max_size=24))
    command = draw(st.sampled_from(sorted(p.COMMAND_NAMES)) | U32)
    magic = command ^ 0xFFFFFFFF if draw(st.booleans()) else draw(U32)
    length = draw(st.integers(0, 16 * 1024 * 1024 + 1) | U32)
    return struct.pack("<6I", command, draw(U32), draw(U32), length, draw(U32), magic)


@given(headers())
def test_a_header_decodes_to_its_fields_or_is_refused_for_its_fault(raw: bytes) -> None:
    command, arg0, arg1, length, check, magic = struct.unpack("<6I", raw)
    if magic != command ^ 0xFFFFFFFF:
        with pytest.raises(p.ProtocolError, match="bad magic"):
            p.decode_header(raw)
    elif length > 16 * 1024 * 1024:
        with pytest.raises(p.ProtocolError, match="too large"):
            p.decode_header(raw)
    else:
        assert p.decode_header(raw) == (command, arg0, arg1, length, check)


@given(st.binary(max_size=48).filter(lambda b: len(b) != 24))
def test_a_header_of_the_wrong_size_is_refused(raw: bytes) -> None:
    with pytest.raises(p.ProtocolError, match=f"header is {len(raw)} bytes"):
        p.decode_header(raw)


def test_bad_checksum_is_rejected() -> None:
    raw = bytearray(p.encode_packet(p.A_WRTE, 1, 2, b"hello"))
    raw[-1] ^= 0xFF
    with pytest.raises(p.ProtocolError):
        p.decode_packet(bytes(raw))


def test_banner_carries_props_and_features() -> None:
    banner = p.device_banner({"ro.product.name": "n", "ro.product.model": "m"})
    assert banner.startswith(b"device::ro.product.name=n;ro.product.model=m;features=")
    kind, props = p.parse_banner(banner)
    assert kind == "device"
    assert "shell_v2" in props["features"].split(",")
    assert "stat_v2" in props["features"].split(",")


@pytest.mark.parametrize(
    ("name", "v2", "pty", "command"),
    [
        ("shell:echo hi", False, False, "echo hi"),
        ("shell:", False, True, ""),
        ("shell,v2,raw:exit 7", True, False, "exit 7"),
        ("shell,v2,TERM=xterm-256color,pty:", True, True, ""),
        ("shell,v2:ls -l /data", True, False, "ls -l /data"),
    ],
)
def test_parse_shell_service(name: str, v2: bool, pty: bool, command: str) -> None:
    req = p.parse_shell_service(name)
    assert (req.v2, req.use_pty, req.command) == (v2, pty, command)


def test_shell_packets_reassemble_across_chunks() -> None:
    stream = p.shell_packet(1, b"out") + p.shell_packet(2, b"err") + p.shell_packet(3, b"\x07")
    reader = p.ShellPacketReader()
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i:i + 1])
    assert got == [(1, b"out"), (2, b"err"), (3, b"\x07")]


def test_sync_struct_sizes() -> None:
    assert p.SYNC_STAT_V1.size == 16
    assert p.SYNC_STAT_V2.size == 72
    assert p.SYNC_DENT_V1.size == 20
    assert p.SYNC_DENT_V2.size == 76
