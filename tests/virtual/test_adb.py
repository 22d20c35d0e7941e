"""The virtual phone against the real adb server: shell, sync, restarts."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from melt.virtual.phone import VirtualPhone
from melt.virtual.testing import AdbServer
from tests.helpers import readline

pytestmark = pytest.mark.adb


def test_devices_lists_the_phone_with_its_banner(adb_server: AdbServer, adb_serial: str) -> None:
    out = adb_server.run("devices", "-l").stdout
    line = next(x for x in out.splitlines() if x.startswith(adb_serial))
    assert " device " in line
    assert "product:melt_virtual" in line
    assert "model:Melt_Virtual_Phone" in line
    assert "device:melt_virtual" in line


def test_shell_echo_and_exit_status(adb_server: AdbServer, adb_serial: str) -> None:
    done = adb_server.run("-s", adb_serial, "shell", "echo hi")
    assert (done.returncode, done.stdout) == (0, "hi\n")
    assert adb_server.run("-s", adb_serial, "shell", "exit 7").returncode == 7
    both = adb_server.run("-s", adb_serial, "shell", "echo out; echo err >&2; exit 3")
    assert (both.returncode, both.stdout, both.stderr) == (3, "out\n", "err\n")


def test_features_are_announced(adb_server: AdbServer, adb_serial: str) -> None:
    features = adb_server.run("-s", adb_serial, "features").stdout.split()
    for name in ("shell_v2", "cmd", "stat_v2", "fixed_push_mkdir"):
        assert name in features


def test_shell_output_streams_while_the_command_runs(adb_server: AdbServer, adb_serial: str) -> None:
    proc = subprocess.Popen(
        ["adb", "-P", str(adb_server.port), "-s", adb_serial, "shell", "echo first; sleep 3; echo second"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    t0 = time.monotonic()
    assert proc.stdout is not None
    assert readline(proc.stdout) == "first\n"
    assert time.monotonic() - t0 < 2.5
    assert readline(proc.stdout) == "second\n"
    assert proc.wait(10) == 0


def test_stdin_reaches_the_command(adb_server: AdbServer, adb_serial: str) -> None:
    done = subprocess.run(
        ["adb", "-P", str(adb_server.port), "-s", adb_serial, "shell", "cat | sed s/hello/HELLO/"],
        input="hello\n", capture_output=True, text=True, timeout=30,
    )
    assert done.stdout == "HELLO\n"


def test_exec_out_is_raw_bytes(adb_server: AdbServer, adb_serial: str) -> None:
    done = subprocess.run(
        ["adb", "-P", str(adb_server.port), "-s", adb_serial, "exec-out", "printf 'a\\000b\\r\\n'"],
        capture_output=True, timeout=30,
    )
    assert done.stdout == b"a\0b\r\n"


def test_push_pull_100mb_byte_identical(adb_server: AdbServer, adb_serial: str, tmp_path: Path,
                                        virtual_phone: VirtualPhone) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1024 * 1024))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    push = adb_server.run("-s", adb_serial, "push", str(src), "/data/local/tmp/sub/big.bin", timeout=300)
    assert push.returncode == 0, push.stderr + push.stdout
    on_device = adb_server.run("-s", adb_serial, "shell", "sha256sum /data/local/tmp/sub/big.bin").stdout
    assert on_device.split()[0] == digest
    assert virtual_phone.host_path("/data/local/tmp/sub/big.bin").stat().st_size == 100 * 1024 * 1024
    dst = tmp_path / "back.bin"
    pull = adb_server.run("-s", adb_serial, "pull", "/data/local/tmp/sub/big.bin", str(dst), timeout=300)
    assert pull.returncode == 0, pull.stderr + pull.stdout
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == digest


def test_push_keeps_mode_and_runs_host_binaries(adb_server: AdbServer, adb_serial: str, tmp_path: Path) -> None:
    exe = tmp_path / "hello.sh"
    exe.write_text("#!/bin/sh\necho from-device $(pwd)\n")
    exe.chmod(0o755)
    assert adb_server.run("-s", adb_serial, "push", str(exe), "/data/local/tmp/").returncode == 0
    done = adb_server.run("-s", adb_serial, "shell", "cd /data/local/tmp && ./hello.sh")
    assert done.stdout == "from-device /data/local/tmp\n"
    true_bin = adb_server.run("-s", adb_serial, "push", "/bin/true", "/data/local/tmp/true")
    assert true_bin.returncode == 0
    assert adb_server.run("-s", adb_serial, "shell", "/data/local/tmp/true").returncode == 0


def test_pull_of_missing_file_fails_clearly(adb_server: AdbServer, adb_serial: str, tmp_path: Path) -> None:
    done = adb_server.run("-s", adb_serial, "pull", "/data/local/tmp/nope", str(tmp_path / "x"))
    assert done.returncode != 0
    assert "No such file" in done.stderr + done.stdout


def test_push_outside_data_is_read_only(adb_server: AdbServer, adb_serial: str, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    done = adb_server.run("-s", adb_serial, "push", str(f), "/system/f")
    assert done.returncode != 0
    assert "Read-only" in done.stderr + done.stdout


def test_concurrent_streams(adb_server: AdbServer, adb_serial: str) -> None:
    results: dict[int, str] = {}

    def one(i: int) -> None:
        done = adb_server.run("-s", adb_serial, "shell", f"sleep 2; echo {i}")
        results[i] = done.stdout.strip()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: str(i) for i in range(6)}
    # side by side, not one after another (12 s): the margin leaves a busy machine 5 s of overhead
    assert time.monotonic() - t0 < 7


def test_kill_mid_command_then_restart_and_reconnect(adb_server: AdbServer, adb_serial: str,
                                                     virtual_phone: VirtualPhone) -> None:
    import adbutils

    device = adb_server.client.device(adb_serial)
    outcome: dict[str, BaseException | object] = {}

    def long_command() -> None:
        try:
            outcome["result"] = device.shell2("echo started; sleep 30", v2=True, timeout=60)
        except BaseException as exc:  # noqa: BLE001 - the failure is what we check
            outcome["error"] = exc

    worker = threading.Thread(target=long_command)
    worker.start()
    cli = subprocess.Popen(
        ["adb", "-P", str(adb_server.port), "-s", adb_serial, "shell", "echo started; sleep 30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    assert cli.stdout is not None and readline(cli.stdout) == "started\n"
    t0 = time.monotonic()
    virtual_phone.kill()
    worker.join(20)
    cli.wait(20)
    assert time.monotonic() - t0 < 15  # both ended with the phone, not after the 30 s sleep
    # adbutils sees the stream die before any exit status: an error, never a result
    assert "result" not in outcome
    assert isinstance(outcome["error"], (EOFError, adbutils.AdbError, OSError))
    assert adb_server.wait_state(adb_serial, ("offline", "absent")) in ("offline", "absent")
    failed = adb_server.run("-s", adb_serial, "shell", "echo hi", timeout=30)
    assert failed.returncode != 0
    assert "offline" in failed.stderr or "not found" in failed.stderr

    port = virtual_phone.port
    virtual_phone.start()
    assert virtual_phone.port == port
    adb_server.connect(virtual_phone.address)
    done = adb_server.run("-s", adb_serial, "shell", "echo back")
    assert done.stdout == "back\n"
    assert device.shell2("exit 5", v2=True).returncode == 5


def test_two_phones_at_once(adb_server: AdbServer, virtual_phone_factory) -> None:
    a, b = virtual_phone_factory(), virtual_phone_factory()
    assert a.port != b.port
    for phone in (a, b):
        serial = adb_server.connect(phone.address)
        done = adb_server.run("-s", serial, "shell", "getprop ro.serialno")
        assert done.stdout.strip() == f"VIRTUAL{phone.port}"
        adb_server.run("disconnect", serial)


def _host_pids(marker: str) -> list[int]:
    """Host pids of processes whose command line holds ``marker``."""
    out = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" "):
                out.append(int(name))
        except OSError:
            continue
    return out


def test_a_killed_phone_takes_what_it_left_running_along(adb_server: AdbServer, adb_serial: str,
                                                         virtual_phone: VirtualPhone) -> None:
    """The phone's init holds its PID namespace: SIGKILL the phone and its processes die too."""
    marker = f"sleep 300.{os.getpid()}"  # a command line no one else runs
    adb_server.run("-s", adb_serial, "shell", f"nohup {marker} >/dev/null 2>&1 &")
    assert len(_host_pids(marker)) == 1
    virtual_phone.kill()
    deadline = time.monotonic() + 5
    while _host_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _host_pids(marker)
    virtual_phone.start()
    serial = adb_server.connect(virtual_phone.address)
    assert adb_server.run("-s", serial, "shell", "echo back").stdout == "back\n"


def test_interactive_shell_reads_commands_from_stdin(adb_server: AdbServer, adb_serial: str) -> None:
    done = subprocess.run(
        ["adb", "-P", str(adb_server.port), "-s", adb_serial, "shell"],
        input="echo inside\nexit 4\n", capture_output=True, text=True, timeout=30,
    )
    assert "inside" in done.stdout
    assert done.returncode == 4


def test_pty_shell(adb_server: AdbServer, adb_serial: str) -> None:
    done = subprocess.run(
        ["adb", "-P", str(adb_server.port), "-s", adb_serial, "shell", "-tt", "[ -t 0 ] && [ -t 1 ] && tty; exit 2"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    # the phone's /dev is its own (bubblewrap's): the host's pseudo-terminal shows as its console
    assert done.stdout.strip() == "/dev/console", done.stdout + done.stderr
    assert done.returncode == 2
