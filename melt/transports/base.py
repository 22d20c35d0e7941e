"""The one small interface through which melt reaches every device.

Callers never see subprocess, adbutils or paramiko: they hold a
:class:`Transport` and call ``run``, ``start``, ``push``, ``pull``, ``kill``
and ``forward``. Arguments are argv lists; a transport that goes through a remote
shell quotes each one with :func:`shlex.join`.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable


#: The most melt keeps of one command's output (stdout and stderr together) from a device.
#: A command that prints more fails with ``OutputTooLargeError`` instead of filling memory.
MAX_COMMAND_OUTPUT_BYTES = 64 << 20
#: The most melt takes of one file pulled from a device (job outputs and traces).
MAX_PULL_BYTES = 1 << 30


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def command_line(self) -> str:
        """The command as a shell would read it (every argument quoted)."""
        return shlex.join(self.argv)


class Forward:
    """A port on this host that reaches a TCP port on the device, until closed.

    Connect to ``127.0.0.1:local_port`` to reach ``remote_port`` on the device
    (``adb forward``, an SSH tunnel, or the same port on the local machine).
    :meth:`close` removes the forward; it is idempotent, and runs on leaving a
    ``with`` block whatever happened inside it. Transports pass the function
    that tears their forward down as ``closer``.
    """

    host = "127.0.0.1"

    def __init__(self, local_port: int, remote_port: int, closer: Callable[[], None] | None = None):
        self.local_port = int(local_port)
        self.remote_port = int(remote_port)
        self._closer = closer
        self.closed = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:LOCAL_PORT``: the base URL of an HTTP server behind the forward."""
        return f"http://{self.host}:{self.local_port}"

    def close(self) -> None:
        """Remove the forward (once; later calls do nothing)."""
        if self.closed:
            return
        self.closed = True
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> "Forward":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Forward {self.host}:{self.local_port} -> device:{self.remote_port} ({state})>"


@runtime_checkable
class RemoteProcess(Protocol):
    """A process started in the background on a device."""

    pid: int

    def poll(self) -> int | None:
        """Exit status, or ``None`` while it runs."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status; raises ``CommandTimeout`` past ``timeout`` s."""

    def kill(self) -> None:
        """Stop the process and its children."""


@runtime_checkable
class Transport(Protocol):
    """Run commands on a device and move files to and from it."""

    name: str

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` to completion.

        Raises ``RemoteCommandError`` on a non-zero exit when ``check`` is true,
        ``CommandTimeout`` past ``timeout`` seconds, ``DeviceUnavailableError``
        when the device is gone.
        """

    def shell(self, script: str, *, timeout: float = 60, check: bool = True) -> CommandResult:
        """Run a shell script written by melt itself (never user text unquoted)."""

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdout_path: str | None = None,
        stderr_path: str | None = None,
    ) -> RemoteProcess:
        """Start ``argv`` in the background, headless; output to the given device files."""

    def push(self, local: Path, remote: str) -> None:
        """Copy a local file to ``remote`` on the device (parents created)."""

    def pull(self, remote: str, local: Path) -> None:
        """Copy ``remote`` from the device to ``local`` (parents created)."""

    def kill(self, pid: int, signal: str = "TERM") -> None:
        """Send ``signal`` to a process on the device; a process already gone is fine."""

    def forward(self, remote_port: int) -> Forward:
        """Reach TCP ``remote_port`` on the device from a free port on this host.

        Returns a :class:`Forward` (use it in a ``with`` block, or ``close()``
        it). Raises ``TransportError`` when the forward cannot be set up.
        """


class ShellProcess:
    """A background process on a device reached through a shell (adb, ssh).

    The transport's ``start`` runs it in its own process group and writes its
    exit status to ``status_path`` when it ends; this object reads that file.
    """

    def __init__(self, transport: Transport, pid: int, status_path: str):
        self._t = transport
        self.pid = pid
        self._status_path = status_path
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None:
            r = self._t.shell(f"cat {shlex.quote(self._status_path)} 2>/dev/null", check=False)
            text = r.stdout.strip()
            if text.lstrip("-").isdigit():
                self._code = int(text)
        return self._code

    def wait(self, timeout: float | None = None) -> int:
        from melt.errors import CommandTimeout

        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise CommandTimeout(f"process {self.pid} still running after {timeout} s")
            time.sleep(0.2)
        return code

    #: shell test that is true while the process still counts as running ({pid} filled in)
    alive_test = "kill -0 {pid} 2>/dev/null"

    def kill(self) -> None:
        """SIGKILL the whole process group, then wait (up to 5 s) until ``alive_test`` fails."""
        pid = int(self.pid)
        alive = self.alive_test.format(pid=pid)
        self._t.shell(
            f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; i=0; "
            f"while [ $i -lt 50 ] && {alive}; do sleep 0.1; i=$((i+1)); done",
            check=False,
        )
