"""Host keys are checked against known_hosts: unknown and changed keys are refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from melt.errors import TransportError
from melt.transports.hostkeys import ChangedHostKey, UnknownHostKey, fingerprint, melt_known_hosts, record
from melt.transports.ssh import SshTransport
from tests.helpers import error_line, melt


def _fingerprint_of(pub: Path) -> str:
    """The fingerprint OpenSSH itself computes for a public key file."""
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def test_unknown_host_key_is_refused_with_its_fingerprint(untrusted) -> None:
    with pytest.raises(UnknownHostKey) as info:
        SshTransport(untrusted.host, port=untrusted.port, device="virtual-jetson")
    message = str(info.value)
    expected = _fingerprint_of(untrusted.dir / "ssh_host_ed25519_key.pub")
    assert expected in message
    assert f"[127.0.0.1]:{untrusted.port}" in message
    assert "melt devices trust virtual-jetson" in message


def test_trust_command_shows_and_records_the_key(untrusted, device_config: Path, tmp_path: Path) -> None:
    expected = _fingerprint_of(untrusted.dir / "ssh_host_ed25519_key.pub")
    wrong = melt("devices", "trust", "virtual-jetson", "--fingerprint", "SHA256:notthisone", cwd=tmp_path)
    assert f"offers {expected}, not SHA256:notthisone: not trusted" in error_line(wrong)
    assert not melt_known_hosts().exists()
    done = melt("devices", "trust", "virtual-jetson", "--fingerprint", expected, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    assert f"[127.0.0.1]:{untrusted.port} ssh-ed25519" in melt_known_hosts().read_text()
    t = SshTransport(untrusted.host, port=untrusted.port)
    assert t.run(["echo", "trusted"]).stdout == "trusted\n"
    t.close()


def test_changed_host_key_is_refused(trusted, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    impostor = paramiko.Ed25519Key.from_private_key_file(str(other))
    record(trusted.host, trusted.port, impostor)  # what we believe the board's key is
    with pytest.raises(ChangedHostKey) as info:
        SshTransport(trusted.host, port=trusted.port)
    message = str(info.value)
    assert "HOST KEY CHANGED" in message
    assert _fingerprint_of(trusted.dir / "ssh_host_ed25519_key.pub") in message
    assert fingerprint(impostor) in message


def test_reinstalled_board_is_refused_after_restart(melt_config, tmp_path: Path) -> None:
    """The same board with a new host key (a reinstall) on the same port: refused."""
    from melt.transports.hostkeys import trust
    from melt.virtual.jetson import VirtualJetson

    board = VirtualJetson(port=0, state_dir=tmp_path / "board")
    board.start()
    try:
        trust(board.host, board.port)
        SshTransport(board.host, port=board.port).close()
        board.stop()
        board.new_host_key()
        board.start()
        with pytest.raises(ChangedHostKey):
            SshTransport(board.host, port=board.port)
    finally:
        board.stop()


def test_password_is_only_read_from_the_named_variable(untrusted, monkeypatch) -> None:
    from melt.config.specs import SshSpec

    with pytest.raises(ValueError, match="must be the NAME of an environment variable"):
        SshSpec(host="h", password_env="hunter2!")  # a password where a variable name belongs
    assert SshSpec(host="h", password_env="BOARD_PASSWORD_1").password_env == "BOARD_PASSWORD_1"
    monkeypatch.delenv("MELT_TEST_BOARD_PASSWORD", raising=False)
    with pytest.raises(TransportError) as info:
        SshTransport(untrusted.host, port=untrusted.port, password_env="MELT_TEST_BOARD_PASSWORD")
    assert "MELT_TEST_BOARD_PASSWORD" in str(info.value) and "not set" in str(info.value)
