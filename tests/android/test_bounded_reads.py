"""A phone that prints without end, or hands back a file without end, meets a limit (real adb server)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import melt.transports.adb as adb_module
from melt.errors import OutputTooLargeError
from melt.transports.adb import AdbTransport
from melt.transports.base import MAX_COMMAND_OUTPUT_BYTES

pytestmark = pytest.mark.adb


@pytest.fixture
def transport(adb_server, adb_serial):
    return AdbTransport(adb_serial, server_port=adb_server.port)


def test_an_endless_command_output_is_a_clear_error(transport) -> None:
    word = f"melt-endless-{os.getpid()}"
    t0 = time.monotonic()
    with pytest.raises(OutputTooLargeError, match="limit of 64 MiB") as caught:
        transport.run(["sh", "-c", f"yes {word}"], timeout=300)
    assert caught.value.limit == MAX_COMMAND_OUTPUT_BYTES and "\n" not in str(caught.value)
    assert time.monotonic() - t0 < 120  # stopped at the limit, not at the timeout
    assert transport.run(["echo", "still here"]).stdout == "still here\n"


def test_the_whole_command_has_one_deadline(transport) -> None:
    """A trickle of output keeps every single read short; the command still ends at its timeout."""
    from melt.errors import CommandTimeout

    t0 = time.monotonic()
    with pytest.raises(CommandTimeout):
        transport.run(["sh", "-c", "while :; do echo tick; sleep 0.2; done"], timeout=2)
    assert time.monotonic() - t0 < 10


def test_a_pull_over_the_limit_keeps_nothing(transport, tmp_path: Path, monkeypatch) -> None:
    transport.run(["sh", "-c", "head -c 3000000 /dev/zero > /data/local/tmp/melt-big.bin"])
    monkeypatch.setattr(adb_module, "MAX_PULL_BYTES", 1 << 20)
    with pytest.raises(OutputTooLargeError, match="limit of 1 MiB"):
        transport.pull("/data/local/tmp/melt-big.bin", tmp_path / "big.bin")
    assert not (tmp_path / "big.bin").exists()
    monkeypatch.setattr(adb_module, "MAX_PULL_BYTES", 4 << 20)
    transport.pull("/data/local/tmp/melt-big.bin", tmp_path / "big.bin")  # under the limit: whole
    assert (tmp_path / "big.bin").read_bytes() == bytes(3_000_000)


def test_a_device_without_shell_v2_is_read_with_the_same_bounds(transport, monkeypatch) -> None:
    transport._v2 = False  # as an old adbd that does not offer shell_v2
    r = transport.run(["sh", "-c", "echo out; exit 7"], check=False)
    assert (r.returncode, r.stdout) == (7, "out\n")
    monkeypatch.setattr(adb_module, "MAX_COMMAND_OUTPUT_BYTES", 1 << 20)  # a pty is slow: a smaller limit
    with pytest.raises(OutputTooLargeError, match="limit of 1 MiB"):
        transport.run(["yes"], timeout=300)
