"""SSH host keys: melt's own known_hosts, fingerprints, and the refusal policy.

Host keys are checked as OpenSSH's ``StrictHostKeyChecking yes`` does: a key
must already be listed in melt's own ``known_hosts`` (``config_dir()/
known_hosts``) or the user's ``~/.ssh/known_hosts``. An unknown key and a
changed key are refused with the host and the fingerprint in the message;
trusting a host is an explicit act (``melt devices trust NAME``), which
appends its key to melt's file.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import paramiko

from melt.errors import TransportError
from melt.store.paths import config_dir


def melt_known_hosts() -> Path:
    """melt's own known_hosts file (it may not exist yet)."""
    return config_dir() / "known_hosts"


def user_known_hosts() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's fingerprint of a key: ``SHA256:`` and unpadded base64."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_entry(host: str, port: int) -> str:
    """The name a known_hosts line uses: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


class UnknownHostKey(TransportError):
    """The server's key is in no known_hosts file."""

    def __init__(self, host: str, port: int, key: paramiko.PKey, device: str | None = None):
        self.host, self.port, self.key = host, port, key
        self.fingerprint = fingerprint(key)
        how = f"melt devices trust {device}" if device else "melt devices trust NAME"
        super().__init__(
            f"unknown host key for {host_entry(host, port)}: {key.get_name()} {self.fingerprint}; "
            f"refusing to connect. Check the fingerprint on the device, then run `{how}`")


class ChangedHostKey(TransportError):
    """The server's key differs from the one recorded for it."""

    def __init__(self, host: str, port: int, got: paramiko.PKey, expected: paramiko.PKey):
        self.host, self.port = host, port
        self.fingerprint = fingerprint(got)
        super().__init__(
            f"HOST KEY CHANGED for {host_entry(host, port)}: it now offers {got.get_name()} "
            f"{self.fingerprint}, recorded was {expected.get_name()} {fingerprint(expected)}; "
            f"refusing to connect (someone may be intercepting the connection, or the device was "
            f"reinstalled: remove the old line from {melt_known_hosts()} or ~/.ssh/known_hosts)")


class _Refuse(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, with melt's message (host, port and fingerprint)."""

    def __init__(self, port: int, device: str | None):
        self.port, self.device = port, device

    def missing_host_key(self, client, hostname, key):  # noqa: ANN001 (paramiko's signature)
        host = hostname
        if hostname.startswith("[") and "]:" in hostname:
            host = hostname[1:].split("]:", 1)[0]
        raise UnknownHostKey(host, self.port, key, self.device)


class _Capture(paramiko.MissingHostKeyPolicy):
    """Accepts nothing either, but keeps the key for :func:`scan_host_key`."""

    def __init__(self) -> None:
        self.key: paramiko.PKey | None = None

    def missing_host_key(self, client, hostname, key):  # noqa: ANN001
        self.key = key
        raise paramiko.SSHException("host key captured")


def prepare_client(client: paramiko.SSHClient, *, port: int, device: str | None) -> None:
    """Load both known_hosts files and refuse anything else."""
    for path in (user_known_hosts(), melt_known_hosts()):
        if path.is_file():
            try:
                client.load_host_keys(str(path)) if path == melt_known_hosts() else \
                    client.load_system_host_keys(str(path))
            except (OSError, paramiko.SSHException) as exc:
                raise TransportError(f"cannot read {path}: {exc}") from None
    client.set_missing_host_key_policy(_Refuse(port, device))


def lookup(host: str, port: int) -> paramiko.PKey | None:
    """The recorded key of ``host:port`` (melt's file first), if any."""
    for path in (melt_known_hosts(), user_known_hosts()):
        if not path.is_file():
            continue
        keys = paramiko.HostKeys(str(path)).lookup(host_entry(host, port))
        if keys:
            return next(iter(keys.values()))
    return None


def record(host: str, port: int, key: paramiko.PKey) -> Path:
    """Append ``key`` for ``host:port`` to melt's known_hosts (atomically); returns the file."""
    path = melt_known_hosts()
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = host_entry(host, port)
    lines = path.read_text().splitlines() if path.is_file() else []
    lines = [ln for ln in lines if ln.split(" ", 1)[0] != entry]  # trust replaces an old key
    lines.append(f"{entry} {key.get_name()} {key.get_base64()}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def scan_host_key(host: str, port: int, *, timeout: float = 10.0, sock=None) -> paramiko.PKey:  # noqa: ANN001
    """The key ``host:port`` offers (no login, nothing trusted). Raises ``TransportError``."""
    import socket

    try:
        if sock is None:
            sock = socket.create_connection((host, port), timeout=timeout)
        t = paramiko.Transport(sock)
        try:
            t.start_client(timeout=timeout)
            return t.get_remote_server_key()
        finally:
            t.close()
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise TransportError(f"cannot read the host key of {host_entry(host, port)}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None


def trust(host: str, port: int, *, expect: str | None = None, timeout: float = 10.0,
          sock=None) -> tuple[paramiko.PKey, Path]:  # noqa: ANN001
    """Record the key ``host:port`` offers now; with ``expect``, only if its fingerprint matches.

    Returns (key, known_hosts file). Raises ``TransportError`` on a mismatch.
    """
    key = scan_host_key(host, port, timeout=timeout, sock=sock)
    if expect is not None and expect.strip() not in (fingerprint(key), fingerprint(key).removeprefix("SHA256:")):
        raise TransportError(f"{host_entry(host, port)} offers {fingerprint(key)}, not {expect}: not trusted")
    return key, record(host, port, key)
