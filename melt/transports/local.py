"""The local machine as a device: subprocess, no shell unless melt wrote the script."""

from __future__ import annotations

import os
import selectors
import shutil
import signal as _signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

from melt.errors import CommandTimeout, OutputTooLargeError, RemoteCommandError, TransportError
from melt.transports.base import MAX_COMMAND_OUTPUT_BYTES, CommandResult, Forward


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if env is None else {**os.environ, **env}


def _read_bounded(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bytes]:
    """stdout and stderr of ``proc`` until it exits, at most :data:`MAX_COMMAND_OUTPUT_BYTES` together.

    Raises ``subprocess.TimeoutExpired`` past ``deadline`` (monotonic) and
    ``OutputTooLargeError`` over the limit; the caller stops the process.
    """
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    with selectors.DefaultSelector() as sel:
        for stream in bufs:
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, 0)
            for key, _ in sel.select(min(left, 1.0)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                bufs[key.fileobj] += chunk
                if sum(len(b) for b in bufs.values()) > MAX_COMMAND_OUTPUT_BYTES:
                    raise OutputTooLargeError("a local command's output", MAX_COMMAND_OUTPUT_BYTES)
    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for stream in bufs:
        stream.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.kill()
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class LocalProcess:
    """A background process on this machine, in its own process group."""

    def __init__(self, popen: subprocess.Popen):
        self._popen = popen
        self.pid = popen.pid

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"process {self.pid} still running after {timeout} s") from None

    def kill(self) -> None:
        if self._popen.poll() is None:
            try:
                os.killpg(self.pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._popen.wait()


class LocalTransport:
    """Runs commands on this machine; push and pull are file copies."""

    name = "local"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=_merged_env(env),
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError:
            result = CommandResult(argv, 127, "", f"{argv[0]}: not found", 0.0)
            if check:
                raise RemoteCommandError(result) from None
            return result
        except PermissionError:
            result = CommandResult(argv, 126, "", f"{argv[0]}: permission denied", 0.0)
            if check:
                raise RemoteCommandError(result) from None
            return result
        try:
            out, err = _read_bounded(proc, t0 + timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CommandTimeout(f"timed out after {timeout:g} s: {CommandResult(argv, -1, '', '').command_line()}") from None
        except OutputTooLargeError:
            _kill_group(proc)
            line = CommandResult(argv, -1, "", "").command_line()
            raise OutputTooLargeError(f"the output of {line[:80]!r}", MAX_COMMAND_OUTPUT_BYTES) from None
        result = CommandResult(
            argv,
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.monotonic() - t0,
        )
        if check and result.returncode != 0:
            raise RemoteCommandError(result)
        return result

    def shell(self, script: str, *, timeout: float = 60, check: bool = True) -> CommandResult:
        return self.run(["/bin/sh", "-c", script], timeout=timeout, check=check)

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdout_path: str | None = None,
        stderr_path: str | None = None,
    ) -> LocalProcess:
        out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
        err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        try:
            popen = subprocess.Popen(
                [str(a) for a in argv],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=_merged_env(env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        finally:
            for f in (out, err):
                if hasattr(f, "close"):
                    f.close()
        return LocalProcess(popen)

    def push(self, local: Path, remote: str) -> None:
        dst = Path(remote)
        if dst.exists() and Path(local).resolve() == dst.resolve():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(local, dst)
        except OSError as exc:
            raise TransportError(f"cannot copy {local} to {remote}: {exc.strerror or exc}") from None

    def pull(self, remote: str, local: Path) -> None:
        self.push(Path(remote), str(local))

    def kill(self, pid: int, signal: str = "TERM") -> None:
        try:
            os.kill(pid, getattr(_signal, f"SIG{signal}"))
        except ProcessLookupError:
            pass

    def forward(self, remote_port: int) -> Forward:
        """This machine is the device: its port is reached as it is (closing does nothing)."""
        remote_port = int(remote_port)
        if not 0 < remote_port < 65536:
            raise TransportError(f"cannot forward to port {remote_port}: not a TCP port")
        return Forward(remote_port, remote_port)
