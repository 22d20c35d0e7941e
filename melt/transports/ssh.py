"""Linux boards and Jetsons over SSH, with paramiko.

- Host keys are checked (:mod:`melt.transports.hostkeys`): an unknown or
  changed key is refused, naming the host and the fingerprint.
- Key authentication: the agent, a key file, ``~/.ssh/id_*`` and melt's own
  key (``config_dir()/ssh/id_ed25519``). A password, when a device config
  names an environment variable holding one, is read from that variable at
  connect time and handed to paramiko in memory: it never reaches argv, a
  log, a result or the device's shell.
- Every command runs as ``exec /bin/sh -c QUOTED`` in a clean environment
  (``env -i`` with HOME, USER, LANG and the configured PATH), behind a marker
  line on stdout and stderr: whatever the user's login scripts print before
  it is dropped, so output is the command's own.
- One TCP connection (TCP_NODELAY) carries every command, SFTP and port
  forwards; a connection that dropped is opened again before the next call
  (a command that was running when it dropped fails: it is never re-run).
"""

from __future__ import annotations

import getpass
import logging
import os
import select
import shlex
import socket
import stat as statmod
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping, Sequence

import paramiko

from melt.errors import (CommandTimeout, DeviceUnavailableError, OutputTooLargeError, RemoteCommandError,
                         TransportError)
from melt.store.paths import config_dir
from melt.transports.base import (MAX_COMMAND_OUTPUT_BYTES, MAX_PULL_BYTES, CommandResult, Forward,
                                  ShellProcess)
from melt.transports.hostkeys import ChangedHostKey, UnknownHostKey, prepare_client

# paramiko reports a dropped connection itself; melt raises DeviceUnavailableError instead
logging.getLogger("paramiko").addHandler(logging.NullHandler())

ProgressFn = Callable[[int, int], None]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MARK = "MELT-SSH-7f3c"


def melt_key_file() -> Path:
    """melt's own client key (made by ``melt virtual start jetson``, usable for real boards)."""
    return config_dir() / "ssh" / "id_ed25519"


def shell_line(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """``cd DIR && K=V argv...`` with every part quoted."""
    line = shlex.join([str(a) for a in argv])
    if env:
        line = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + line
    if cwd:
        line = f"cd {shlex.quote(cwd)} && {line}"
    return line


def wrap_command(script: str, *, path: str = DEFAULT_PATH) -> str:
    """What goes over the wire for ``script``: marker lines, then a clean ``sh -c``.

    The marker on stdout carries the process group id, so a timed-out command
    can be stopped from another channel.
    """
    clean = ('exec env -i HOME="$HOME" USER="$(id -un)" LOGNAME="$(id -un)" LANG=C.UTF-8 '
             f"PATH={shlex.quote(path)} /bin/sh -c {shlex.quote(script)}")
    outer = (f"read -r _ _ _ _ MELT_PG _ < /proc/$$/stat 2>/dev/null; "
             f"printf '\\n{_MARK} %s\\n' \"${{MELT_PG:-$$}}\"; printf '\\n{_MARK}\\n' >&2; {clean}")
    return f"exec /bin/sh -c {shlex.quote(outer)}"


def _after_marker(data: bytes, *, with_pgid: bool) -> tuple[bytes, int | None, bool]:
    """Strip everything up to and including the marker line; (rest, pgid, found)."""
    tag = f"\n{_MARK}".encode()
    i = data.find(tag)
    if i < 0:
        return data, None, False
    j = data.find(b"\n", i + len(tag))
    if j < 0:
        return data, None, False
    pgid = None
    if with_pgid:
        word = data[i + len(tag):j].strip()
        pgid = int(word) if word.isdigit() else None
    return data[j + 1:], pgid, True


class SshProcess(ShellProcess):
    """A background process on the board, in its own session (see :meth:`SshTransport.start`)."""


class _Tunnel:
    """A listener on 127.0.0.1 whose connections become ``direct-tcpip`` channels
    to ``remote_port`` on the board's loopback (``ssh -L``), until closed."""

    def __init__(self, transport: "SshTransport", remote_port: int, remote_host: str = "127.0.0.1"):
        self._t = transport
        self.remote = (remote_host, int(remote_port))
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.local_port: int = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="melt-ssh-forward", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self._server], [], [], 0.2)
                if not ready:
                    continue
                conn, peer = self._server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                chan = self._t.transport().open_channel("direct-tcpip", self.remote, peer)
            except (paramiko.SSHException, OSError, TransportError):
                conn.close()
                continue
            threading.Thread(target=_pump, args=(conn, chan, self._closed), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        try:
            self._server.close()
        except OSError:
            pass
        self._thread.join(2)


def _pump(sock: socket.socket, chan: paramiko.Channel, closed: threading.Event) -> None:
    try:
        while not closed.is_set():
            ready, _, _ = select.select([sock, chan], [], [], 0.2)
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                chan.sendall(data)
            if chan in ready:
                data = chan.recv(65536)
                if not data:
                    break
                sock.sendall(data)
    except (OSError, paramiko.SSHException):
        pass
    finally:
        chan.close()
        sock.close()


class SshTransport:
    """One Linux board over SSH (see the module doc)."""

    name = "ssh"

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_file: str | None = None,
        use_agent: bool = True,
        password_env: str | None = None,
        jump: dict | None = None,
        connect_timeout_s: float = 10.0,
        reconnect_timeout_s: float = 20.0,
        path: str = DEFAULT_PATH,
        device: str | None = None,
    ):
        self.host, self.port = host, int(port)
        self.user = user or getpass.getuser()
        self.key_file = key_file
        self.use_agent = use_agent
        self._password_env = password_env
        self.jump = jump
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.path = path
        self.device = device
        self.bytes_pushed = 0
        self._client: paramiko.SSHClient | None = None
        self._jump_client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self.connect()

    # ------------------------------------------------------------ connection

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def _key_files(self, key_file: str | None) -> list[str]:
        if key_file:
            return [str(Path(key_file).expanduser())]
        found = [str(melt_key_file())] if melt_key_file().is_file() else []
        return found  # paramiko adds ~/.ssh/id_* itself (look_for_keys)

    def _open(self, host: str, port: int, user: str, key_file: str | None,
              sock: paramiko.Channel | None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        prepare_client(client, port=port, device=self.device)
        if sock is None:
            try:
                raw = socket.create_connection((host, port), timeout=self.connect_timeout_s)
            except OSError as exc:
                raise DeviceUnavailableError(
                    f"cannot reach {user}@{host}:{port}: {exc.strerror or exc}") from None
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = raw  # type: ignore[assignment]
        password = os.environ.get(self._password_env) if self._password_env else None
        if self._password_env and password is None:
            raise TransportError(f"{user}@{host}:{port}: the environment variable "
                                 f"{self._password_env} (named by password_env) is not set")
        try:
            client.connect(
                host, port=port, username=user, key_filename=self._key_files(key_file) or None,
                allow_agent=self.use_agent, look_for_keys=key_file is None, password=password,
                timeout=self.connect_timeout_s, banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s, sock=sock,
            )
        except (UnknownHostKey, ChangedHostKey):
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ChangedHostKey(host, port, exc.key, exc.expected_key) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TransportError(f"{user}@{host}:{port}: authentication failed ({exc}); "
                                 f"melt logs in with keys (agent, key_file, ~/.ssh/id_*, "
                                 f"{melt_key_file()})") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise DeviceUnavailableError(f"cannot connect to {user}@{host}:{port}: "
                                         f"{exc or type(exc).__name__}") from None
        finally:
            password = None  # noqa: F841 (drop the reference at once)
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(5)
        return client

    def connect(self) -> None:
        """Open the connection (through the jump host when configured)."""
        with self._lock:
            self.close()
            sock = None
            if self.jump:
                j = self.jump
                self._jump_client = self._open(j["host"], int(j.get("port") or 22),
                                               j.get("user") or self.user, j.get("key_file"), None)
                jt = self._jump_client.get_transport()
                assert jt is not None
                try:
                    sock = jt.open_channel("direct-tcpip", (self.host, self.port), ("127.0.0.1", 0),
                                           timeout=self.connect_timeout_s)
                except (paramiko.SSHException, OSError) as exc:
                    self.close()
                    raise DeviceUnavailableError(
                        f"jump host {j['host']} cannot reach {self.host}:{self.port}: {exc}") from None
            self._client = self._open(self.host, self.port, self.user, self.key_file, sock)

    def reconnect(self, timeout: float | None = None) -> None:
        """Open the connection again, retrying until ``timeout`` s (default: the config's).

        A refused host key is not retried. Raises ``DeviceUnavailableError``.
        """
        deadline = time.monotonic() + (self.reconnect_timeout_s if timeout is None else timeout)
        while True:
            try:
                self.connect()
                return
            except (UnknownHostKey, ChangedHostKey):
                raise
            except TransportError as exc:
                if time.monotonic() > deadline:
                    raise DeviceUnavailableError(f"{self.address} did not come back: {exc}") from None
            time.sleep(0.3)

    def alive(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    def transport(self) -> paramiko.Transport:
        """The live paramiko transport, reconnecting first when it dropped."""
        with self._lock:
            if not self.alive():
                self.reconnect()
            assert self._client is not None
            t = self._client.get_transport()
            assert t is not None
            return t

    def close(self) -> None:
        with self._lock:
            for obj in (self._sftp, self._client, self._jump_client):
                if obj is not None:
                    try:
                        obj.close()
                    except Exception:  # closing a dead connection may raise anything
                        pass
            self._sftp = self._client = self._jump_client = None

    def _session(self) -> paramiko.Channel:
        for attempt in (0, 1):
            try:
                return self.transport().open_session(timeout=self.connect_timeout_s)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if attempt:
                    raise DeviceUnavailableError(f"{self.address}: {exc or type(exc).__name__}") from None
                with self._lock:
                    self.close()
        raise AssertionError("unreachable")

    # -------------------------------------------------------------- commands

    def shell(self, script: str, *, timeout: float = 60, check: bool = True) -> CommandResult:
        t0 = time.monotonic()
        chan = self._session()
        out, err = bytearray(), bytearray()
        try:
            chan.exec_command(wrap_command(script, path=self.path))
            deadline = t0 + timeout
            while True:
                while chan.recv_ready() and len(out) <= MAX_COMMAND_OUTPUT_BYTES:
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready() and len(err) <= MAX_COMMAND_OUTPUT_BYTES:
                    err += chan.recv_stderr(1 << 16)
                if len(out) + len(err) > MAX_COMMAND_OUTPUT_BYTES:
                    self._stop_group(out)
                    raise OutputTooLargeError(f"the output of {script[:80]!r} on {self.address}",
                                              MAX_COMMAND_OUTPUT_BYTES)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                # the status can arrive just after the check above: only a channel closed
                # without one is a lost connection
                if (chan.closed or not self.alive()) and not chan.exit_status_ready():
                    raise DeviceUnavailableError(
                        f"{self.address}: connection lost while running: {script[:120]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    self._stop_group(out)
                    raise CommandTimeout(f"timed out after {timeout:g} s on {self.address}: {script[:200]}")
                if chan.eof_received:  # all output is in: only the exit status is to come
                    chan.status_event.wait(min(left, 0.5))
                else:
                    select.select([chan], [], [], min(left, 0.5))
            code = chan.recv_exit_status()
            if code == -1:  # closed without an exit status: the connection or sshd went away
                raise DeviceUnavailableError(
                    f"{self.address}: connection lost while running: {script[:120]}")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise DeviceUnavailableError(f"{self.address}: {exc or type(exc).__name__}") from None
        finally:
            chan.close()
        stdout, _, found = _after_marker(bytes(out), with_pgid=True)
        stderr, _, found_err = _after_marker(bytes(err), with_pgid=False)
        if not found and code != 0:  # the wrapper itself failed (no /bin/sh?): keep everything
            stdout = bytes(out)
        result = CommandResult(("sh", "-c", script), code, stdout.decode("utf-8", "replace"),
                               (stderr if found_err else bytes(err)).decode("utf-8", "replace"),
                               time.monotonic() - t0)
        if check and result.returncode != 0:
            raise RemoteCommandError(result)
        return result

    def _stop_group(self, out: bytes) -> None:
        """Kill what a timed-out command left running (its process group)."""
        _, pgid, _ = _after_marker(bytes(out), with_pgid=True)
        if pgid and pgid > 1:
            try:
                self.shell(f"kill -KILL -{pgid} 2>/dev/null; true", timeout=15, check=False)
            except (TransportError, CommandTimeout):
                pass

    def run(self, argv: Sequence[str], *, timeout: float = 60, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None) -> CommandResult:
        r = self.shell(shell_line(argv, env=env, cwd=cwd), timeout=timeout, check=False)
        result = CommandResult(tuple(str(a) for a in argv), r.returncode, r.stdout, r.stderr, r.duration_s)
        if check and result.returncode != 0:
            raise RemoteCommandError(result)
        return result

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
              stdout_path: str | None = None, stderr_path: str | None = None) -> SshProcess:
        out, err = stdout_path or "/dev/null", stderr_path or "/dev/null"
        status = (stdout_path or f"/tmp/.melt-bg-{uuid.uuid4().hex}") + ".status"
        inner = (f"{shell_line(argv, env=env, cwd=cwd)} >{shlex.quote(out)} 2>{shlex.quote(err)} </dev/null; "
                 f"echo $? >{shlex.quote(status)}")
        script = (f"rm -f {shlex.quote(status)}; "
                  f"setsid sh -c {shlex.quote(inner)} </dev/null >/dev/null 2>&1 & echo $!")
        r = self.shell(script, timeout=30)
        try:
            pid = int(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise TransportError(f"could not start {argv[0]} on {self.address}: {r.stdout!r}") from None
        return SshProcess(self, pid, status)

    def kill(self, pid: int, signal: str = "TERM") -> None:
        self.shell(f"kill -{shlex.quote(signal)} {int(pid)} 2>/dev/null", check=False)

    def forward(self, remote_port: int) -> Forward:
        """Forward a free local port to ``remote_port`` on the board's loopback (``ssh -L``)."""
        self.transport()
        tunnel = _Tunnel(self, remote_port)
        return Forward(tunnel.local_port, remote_port, closer=tunnel.close)

    # ----------------------------------------------------------------- files

    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None or not self.alive():
                try:
                    self._sftp = self.transport().open_sftp_client()
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    raise DeviceUnavailableError(f"{self.address}: SFTP: {exc or type(exc).__name__}") from None
                if self._sftp is None:
                    raise TransportError(f"{self.address}: the server offers no SFTP subsystem")
            return self._sftp

    def push(self, local: Path, remote: str, *, progress: ProgressFn | None = None, mode: int = 0o644) -> None:
        local = Path(local)
        parent = remote.rsplit("/", 1)[0] or "/"
        self.shell(f"mkdir -p {shlex.quote(parent)}")
        size = local.stat().st_size
        tmp = f"{remote}.melt-part"
        try:
            sftp = self.sftp()
            sftp.put(str(local), tmp, callback=progress, confirm=True)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, remote)
            got = sftp.stat(remote).st_size
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._sftp = None
            if not self.alive():
                raise DeviceUnavailableError(f"push {local} -> {self.address}:{remote}: connection lost") from None
            raise TransportError(f"push {local} -> {self.address}:{remote} failed: {exc}") from None
        if got != size:
            raise TransportError(f"push {local} -> {remote}: {got} of {size} bytes arrived")
        self.bytes_pushed += size

    def pull(self, remote: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            sftp = self.sftp()
            if statmod.S_ISDIR(sftp.stat(remote).st_mode or 0):
                raise TransportError(f"pull {self.address}:{remote}: is a folder")
            sftp.get(remote, str(local), callback=lambda got, _size: _within(got, remote, self.address))
        except OutputTooLargeError:
            local.unlink(missing_ok=True)
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._sftp = None
            if not self.alive():
                raise DeviceUnavailableError(f"pull {self.address}:{remote}: connection lost") from None
            raise TransportError(f"pull {self.address}:{remote} failed: {exc}") from None

    def read_text(self, remote: str) -> str:
        """A small file's text (SFTP, no shell), at most :data:`MAX_COMMAND_OUTPUT_BYTES`."""
        try:
            with self.sftp().open(remote, "r") as f:
                data = f.read(MAX_COMMAND_OUTPUT_BYTES + 1)
            if len(data) > MAX_COMMAND_OUTPUT_BYTES:
                raise OutputTooLargeError(f"the file {remote} on {self.address}", MAX_COMMAND_OUTPUT_BYTES)
            return data.decode("utf-8", "replace")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"read {self.address}:{remote} failed: {exc}") from None


def _within(got: int, remote: str, address: str) -> None:
    """Stop a pull past :data:`MAX_PULL_BYTES` (the device decides how much it sends)."""
    if got > MAX_PULL_BYTES:
        raise OutputTooLargeError(f"the file {remote} from {address}", MAX_PULL_BYTES)
