"""The virtual phone has Android's userland and refuses to run unisolated unless allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from melt.virtual.sandbox import IsolationError, Sandbox
from melt.virtual.testing import AdbServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_device_shell_is_mksh_with_toybox_and_nothing_else(adb_server: AdbServer, adb_serial: str) -> None:
    def sh(cmd: str) -> str:
        return adb_server.run("-s", adb_serial, "shell", cmd).stdout

    assert "MIRBSD KSH" in sh("echo $KSH_VERSION")
    assert sh("echo $PATH") == "/system/bin:/system/xbin\n"
    assert sh("command -v bash || echo none") == "none\n"
    # applets are toybox's (GNU tools answer --version with their own name)
    assert "toybox" in sh("ls --version 2>&1; true").lower()
    assert sh("readlink /system/bin/sed").strip().endswith("toybox")
    assert sh("getprop ro.melt.virtual") == "1\n"  # the phone's own tools still work


def test_the_runner_picks_the_phones_sh_with_a_realtime_clock(adb_server: AdbServer, adb_serial: str) -> None:
    from melt.config.specs import AdbSpec, DeviceSpec
    from melt.devices.android import AndroidDevice
    from melt.telemetry.session import TelemetrySession

    spec = DeviceSpec(name="virtual", kind="android", virtual={},
                      adb=AdbSpec(serial=adb_serial, server_port=adb_server.port))
    session = TelemetrySession(AndroidDevice.connect(spec))
    shell, clock, _odpm = session._probe()
    assert (shell, clock) == ("sh", "realtime")


def _broken_bwrap_path(tmp_path: Path) -> str:
    """A PATH whose bwrap fails as it does where namespaces are not allowed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mksh", "toybox", "awk"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    fake = bin_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_sandbox_without_working_bwrap_refuses_unless_allowed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", _broken_bwrap_path(tmp_path))
    monkeypatch.delenv("MELT_VIRTUAL_UNISOLATED", raising=False)
    box = Sandbox(tmp_path / "root", serial="x")
    box.create({})
    with pytest.raises(IsolationError, match="No permissions to create new namespace.*MELT_VIRTUAL_UNISOLATED"):
        box.require_isolation()
    assert box.require_isolation(allow_unisolated=True) == "none"
    monkeypatch.setenv("MELT_VIRTUAL_UNISOLATED", "1")
    assert box.require_isolation() == "none"


def test_cli_start_without_isolation_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _broken_bwrap_path(tmp_path), "MELT_VIRTUAL_STATE_DIR": str(tmp_path / "s")}
    env.pop("MELT_VIRTUAL_UNISOLATED", None)
    done = subprocess.run([sys.executable, "-m", "melt.cli.main", "virtual", "start", "android", "--detach",
                           "--port", str(free_port())], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "--unisolated" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("detach", [True, False])
def test_port_out_of_range_is_one_line(tmp_path: Path, detach: bool) -> None:
    env = {**os.environ, "MELT_VIRTUAL_STATE_DIR": str(tmp_path)}
    args = ["virtual", "start", "android", "--port", "70000"] + (["--detach"] if detach else [])
    done = subprocess.run([sys.executable, "-m", "melt.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "70000 is not in the range 0<=x<=65535" in done.stderr


def test_serve_child_port_out_of_range_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "melt.virtual", "serve", "--port", "70000",
                           "--state-dir", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert done.stderr.startswith("Error: port 70000 is out of range") and "Traceback" not in done.stderr


def test_virtual_phone_rejects_port_out_of_range_before_spawning(tmp_path: Path) -> None:
    from melt.errors import MeltError
    from melt.virtual.phone import VirtualPhone

    with pytest.raises(MeltError, match="out of range"):
        VirtualPhone(port=70000, state_dir=tmp_path).start()
