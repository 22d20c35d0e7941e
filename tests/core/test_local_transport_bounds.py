"""A local command that prints without end is stopped at the output limit, not left to fill memory."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from melt.errors import OutputTooLargeError
from melt.transports.local import LocalTransport


def test_an_endless_local_command_is_stopped_at_the_limit() -> None:
    word = f"melt-endless-{os.getpid()}"
    t0 = time.monotonic()
    with pytest.raises(OutputTooLargeError, match="limit of 64 MiB"):
        LocalTransport().run(["sh", "-c", f"yes {word}"], timeout=300)
    assert time.monotonic() - t0 < 60
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert word not in ps  # the process group was killed


def test_output_and_exit_status_as_before() -> None:
    r = LocalTransport().run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
