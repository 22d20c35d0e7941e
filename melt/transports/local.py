"""The local machine as a device: subprocess, no shell unless melt wrote the script."""

from __future__ import annotations

import os
import shutil
import signal as _signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

from melt.errors import CommandTimeout, RemoteCommandError, TransportError
from melt.transports.base import CommandResult, Forward


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if env is None else {**os.environ, **env}


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
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise CommandTimeout(f"timed out after {timeout:g} s: {CommandResult(argv, -1, '', '').command_line()}") from None
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
