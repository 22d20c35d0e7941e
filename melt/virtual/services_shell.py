"""``shell:``, ``shell,v2,...:`` and ``exec:`` services of the virtual phone.

- ``shell:CMD`` (v1, raw): stdout and stderr merged into the stream, stdin
  from the stream, no exit status (adb clients append ``; echo $?``).
- ``shell,v2[,raw|pty][,TERM=..]:CMD``: the shell protocol. Stdout (id 1) and
  stderr (id 2) packets are sent as the command writes them, then one exit
  packet (id 3) with the status byte; stdin (0), close-stdin (4) and window
  size (5) packets are honoured.
- ``exec:CMD``: raw bytes of stdout and stderr, no protocol (``adb exec-out``).

An empty command gets an interactive ``/system/bin/sh -i`` (mksh) on a pseudo-terminal (as
``adb shell`` with no arguments). Commands run inside the sandbox (see
:mod:`melt.virtual.sandbox`); a stream the host closes early kills the
command's process group, as when a phone's adbd drops a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import termios
from typing import Callable

from melt.virtual import adb_protocol as p
from melt.virtual.adb_device import Service, Stream
from melt.virtual.sandbox import Sandbox

READ_CHUNK = 64 * 1024


def exit_status(returncode: int) -> int:
    """Shell-style status byte: the exit code, or 128+N when killed by signal N."""
    return (128 - returncode) & 0xFF if returncode < 0 else returncode & 0xFF


class ShellServices:
    """Resolves and serves the shell-like services on one sandbox."""

    def __init__(self, sandbox: Sandbox, spawned: set[int]):
        self.sandbox = sandbox
        self.spawned = spawned  # pids this phone started itself (see OrphanReaper)

    def resolve(self, name: str) -> Service | None:
        """The coroutine for ``name`` if it is a shell/exec service, else None."""
        if name.startswith("exec:"):
            command = name[5:]
            return lambda stream: self._raw(stream, command, v2=False)
        if name.startswith(("shell:", "shell,")):
            try:
                req = p.parse_shell_service(name)
            except ValueError:
                return None
            if req.use_pty:
                return lambda stream: self._pty(stream, req.command, req.v2, req.term)
            return lambda stream: self._raw(stream, req.command, v2=req.v2)
        return None

    def _argv(self, command: str) -> list[str]:
        return self.sandbox.shell_argv(command)

    async def _raw(self, stream: Stream, command: str, *, v2: bool) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if v2 else asyncio.subprocess.STDOUT,
            env=self.sandbox.environment(),
            cwd=self.sandbox.host_cwd(),
            start_new_session=True,
            pass_fds=self.sandbox.pass_fds,
        )
        self.spawned.add(proc.pid)
        stdin_task = asyncio.create_task(self._feed_stdin(stream, proc.stdin, v2))
        try:

            async def pump(reader: asyncio.StreamReader | None, kind: int) -> None:
                if reader is None:
                    return
                while chunk := await reader.read(READ_CHUNK):
                    await stream.write(p.shell_packet(kind, chunk) if v2 else chunk)

            await asyncio.gather(pump(proc.stdout, p.SHELL_STDOUT), pump(proc.stderr, p.SHELL_STDERR))
            code = await proc.wait()
            if v2:
                await stream.write(p.shell_packet(p.SHELL_EXIT, bytes([exit_status(code)])))
        finally:
            stdin_task.cancel()
            await _stop(proc.pid, lambda: proc.returncode)
            with contextlib.suppress(Exception):
                await proc.wait()
            self.spawned.discard(proc.pid)

    @staticmethod
    async def _feed_stdin(stream: Stream, stdin: asyncio.StreamWriter | None, v2: bool) -> None:
        if stdin is None:
            return
        parser = p.ShellPacketReader()
        try:
            while chunk := await stream.read():
                if not v2:
                    stdin.write(chunk)
                    await stdin.drain()
                    continue
                for kind, data in parser.feed(chunk):
                    if kind == p.SHELL_STDIN:
                        stdin.write(data)
                        await stdin.drain()
                    elif kind == p.SHELL_CLOSE_STDIN:
                        stdin.close()
                        return
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            with contextlib.suppress(Exception):
                stdin.close()

    async def _pty(self, stream: Stream, command: str, v2: bool, term: str | None) -> None:
        master, slave = pty.openpty()

        def controlling_tty() -> None:  # runs in the child, after fork
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(command),
                stdin=slave, stdout=slave, stderr=slave,
                env=self.sandbox.environment(term or "xterm"),
                cwd=self.sandbox.host_cwd(),
                start_new_session=True,
            pass_fds=self.sandbox.pass_fds,
                preexec_fn=controlling_tty,
            )
        finally:
            os.close(slave)
        self.spawned.add(proc.pid)
        loop = asyncio.get_running_loop()
        output: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, READ_CHUNK)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(master)
            output.put_nowait(data)

        loop.add_reader(master, readable)

        async def feed() -> None:
            parser = p.ShellPacketReader()
            while chunk := await stream.read():
                packets = parser.feed(chunk) if v2 else [(p.SHELL_STDIN, chunk)]
                for kind, data in packets:
                    if kind == p.SHELL_STDIN:
                        os.write(master, data)
                    elif kind == p.SHELL_CLOSE_STDIN:
                        os.write(master, b"\x04")
                    elif kind == p.SHELL_WINDOW_SIZE:
                        _set_window_size(master, data)

        stdin_task = asyncio.create_task(feed())
        try:
            while data := await output.get():
                await stream.write(p.shell_packet(p.SHELL_STDOUT, data) if v2 else data)
            code = await proc.wait()
            if v2:
                await stream.write(p.shell_packet(p.SHELL_EXIT, bytes([exit_status(code)])))
        finally:
            stdin_task.cancel()
            loop.remove_reader(master)
            await _stop(proc.pid, lambda: proc.returncode)
            os.close(master)
            self.spawned.discard(proc.pid)


def _set_window_size(fd: int, spec: bytes) -> None:
    """Apply a shell-protocol window size, ``b"ROWSxCOLS,XPIXELSxYPIXELS"``."""
    try:
        cells, _, pixels = spec.rstrip(b"\0").decode().partition(",")
        rows, cols = (int(x) for x in cells.split("x"))
        xpix, ypix = (int(x) for x in pixels.split("x")) if pixels else (0, 0)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpix, ypix))
    except (ValueError, OSError):
        pass


async def _stop(pgid: int, returncode: Callable[[], int | None]) -> None:
    """Hang up a command still running when its stream ended, then kill it."""
    if returncode() is not None:
        return
    for sig, wait_s in ((signal.SIGCONT, 0.0), (signal.SIGHUP, 0.5), (signal.SIGKILL, 0.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = asyncio.get_running_loop().time() + wait_s
        while returncode() is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        if returncode() is not None:
            return
