"""A board that prints without end, or hands back a file without end, meets a limit over the real sshd."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import melt.transports.ssh as ssh_module
from melt.errors import OutputTooLargeError
from melt.transports.base import MAX_COMMAND_OUTPUT_BYTES
from melt.transports.ssh import SshTransport


def test_an_endless_command_output_is_a_clear_error_and_the_command_is_stopped(ssh: SshTransport) -> None:
    word = f"melt-endless-{os.getpid()}"  # a command line no one else runs
    t0 = time.monotonic()
    with pytest.raises(OutputTooLargeError, match="limit of 64 MiB") as caught:
        ssh.run(["sh", "-c", f"yes {word}"], timeout=300)
    assert caught.value.limit == MAX_COMMAND_OUTPUT_BYTES and "\n" not in str(caught.value)
    assert time.monotonic() - t0 < 120  # stopped at the limit, not at the timeout
    time.sleep(0.5)
    assert word not in ssh.run(["ps", "-eo", "args"]).stdout  # the board's yes was killed
    assert ssh.run(["echo", "still here"]).stdout == "still here\n"


def test_a_pull_over_the_limit_keeps_nothing(ssh: SshTransport, jetson, tmp_path: Path, monkeypatch) -> None:
    ssh.run(["sh", "-c", "head -c 3000000 /dev/zero > /tmp/melt-big.bin"])
    monkeypatch.setattr(ssh_module, "MAX_PULL_BYTES", 1 << 20)
    with pytest.raises(OutputTooLargeError, match="limit of 1 MiB"):
        ssh.pull("/tmp/melt-big.bin", tmp_path / "big.bin")
    assert not (tmp_path / "big.bin").exists()
