"""SshTransport against a real sshd (the virtual Jetson's): commands, files, processes, forwards."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from melt.errors import CommandTimeout, DeviceUnavailableError, RemoteCommandError
from melt.transports.ssh import SshTransport

NASTY = ["a;b", "$(touch /tmp/pwned-subst)", "`touch /tmp/pwned-tick`", "it's", 'say "hi"', "x\ny", "*", "$HOME"]


def test_run_returns_exit_code_and_output(ssh: SshTransport) -> None:
    r = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 7"], check=False)
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    with pytest.raises(RemoteCommandError) as info:
        ssh.run(["false"])
    assert info.value.result.returncode == 1


def test_arguments_arrive_intact_and_nothing_runs(ssh: SshTransport, jetson) -> None:
    r = ssh.run(["printf", "%s\\n", *NASTY])
    assert r.stdout == "".join(a + "\n" for a in NASTY)
    r = ssh.run(["env"], env={"MELT_X": "$(touch /tmp/pwned-env);`id`"}, cwd="/tmp")
    assert "MELT_X=$(touch /tmp/pwned-env);`id`" in r.stdout.splitlines()
    for name in ("pwned-subst", "pwned-tick", "pwned-env"):
        assert not ssh.run(["ls", "/tmp"]).stdout.count(name)
        assert not jetson.host_path(f"/tmp/{name}").exists()
        assert not Path(f"/tmp/{name}").exists()


def test_clean_environment_without_login_noise(ssh: SshTransport) -> None:
    """The board's ~/.profile prints on stdout and stderr; none of it reaches the result."""
    r = ssh.shell("echo only-this")
    assert r.stdout == "only-this\n" and r.stderr == ""
    env = dict(line.split("=", 1) for line in ssh.run(["env"]).stdout.splitlines() if "=" in line)
    assert not [k for k in env if k.startswith("SSH_")]
    assert env["LANG"] == "C.UTF-8" and env["PATH"].startswith("/usr/local/sbin:")


def test_timeout_kills_the_remote_command(ssh: SshTransport) -> None:
    marker = f"sleep 29.{os.getpid()}"  # a command line no one else runs
    with pytest.raises(CommandTimeout):
        ssh.run(["sh", "-c", f"{marker}; echo not reached"], timeout=1)
    time.sleep(0.5)
    assert marker not in ssh.run(["ps", "-eo", "args"]).stdout


def test_background_process_and_kill(ssh: SshTransport) -> None:
    proc = ssh.start(["sh", "-c", "echo started; sleep 0.3; exit 5"], stdout_path="/tmp/melt-bg.out")
    assert proc.wait(timeout=10) == 5
    assert ssh.read_text("/tmp/melt-bg.out") == "started\n"
    long = ssh.start(["sleep", "60"])
    assert long.poll() is None
    long.kill()
    assert ssh.run(["sh", "-c", f"kill -0 {long.pid} 2>/dev/null || echo gone"]).stdout == "gone\n"


def test_push_and_pull_round_trip(ssh: SshTransport, tmp_path: Path, jetson) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "blob one;x.bin"
    src.write_bytes(data)
    ssh.push(src, "/tmp/melt push/blob one;x.bin", mode=0o755)
    assert ssh.run(["stat", "-c", "%s %a", "/tmp/melt push/blob one;x.bin"]).stdout.split() == ["300000", "755"]
    ssh.pull("/tmp/melt push/blob one;x.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data
    assert jetson.host_path("/tmp/melt push/blob one;x.bin").read_bytes() == data  # in the sandbox
    assert not Path("/tmp/melt push").exists()  # not on the host's /tmp


def test_forward_reaches_a_server_on_the_board(ssh: SshTransport) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ssh.start(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd="/tmp")
    try:
        with ssh.forward(port) as fwd:
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert urllib.request.urlopen(fwd.url + "/", timeout=5).status == 200
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        assert fwd.closed
    finally:
        server.kill()


def test_the_board_forwards_to_its_own_loopback_only(ssh: SshTransport) -> None:
    """sshd refuses a direct-tcpip channel to any other address, and a remote forward."""
    import paramiko

    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.2", port), timeout=5):
            pass  # reachable from this host: a refusal below is sshd's policy, not the network
        t = ssh.transport()
        chan = t.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=10)
        chan.close()
        for target in (("127.0.0.2", port), ("192.0.2.1", 80)):
            with pytest.raises(paramiko.ChannelException) as info:
                t.open_channel("direct-tcpip", target, ("127.0.0.1", 0), timeout=10)
            assert info.value.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        with pytest.raises(paramiko.SSHException):
            t.request_port_forward("127.0.0.1", 0)


def test_dropped_connection_fails_the_command_then_reconnects(ssh: SshTransport, jetson) -> None:
    errors: list[BaseException] = []

    def long_command() -> None:
        try:
            ssh.run(["sleep", "20"], timeout=30)
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            errors.append(exc)

    worker = threading.Thread(target=long_command)
    worker.start()
    time.sleep(1.0)
    jetson.restart_sshd(down_s=1.0)  # sshd and every session die, as in a crash
    worker.join(30)
    assert len(errors) == 1 and isinstance(errors[0], DeviceUnavailableError)
    assert ssh.run(["echo", "back"]).stdout == "back\n"  # reconnected on its own


def test_jump_host(melt_config, jetson, trusted, tmp_path: Path) -> None:
    from melt.transports.hostkeys import trust
    from melt.virtual.jetson import VirtualJetson

    bastion = VirtualJetson(port=0, state_dir=tmp_path / "bastion")
    bastion.start()
    try:
        trust(bastion.host, bastion.port)
        t = SshTransport(jetson.host, port=jetson.port,
                         jump={"host": bastion.host, "port": bastion.port})
        assert t.run(["cat", "/sys/firmware/devicetree/base/model"]).stdout.startswith("NVIDIA Jetson")
        t.close()
    finally:
        bastion.stop()
