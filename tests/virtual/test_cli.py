"""``melt virtual start|list|stop|heat|throttle`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from melt.cli.main import cli
from melt.virtual.testing import AdbServer, free_port
from tests.helpers import readline

ROOT = Path(__file__).resolve().parents[2]


def melt(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MELT_VIRTUAL_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "melt.cli.main", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, env=env)


def test_help_of_every_virtual_command() -> None:
    for path in (["virtual"], ["virtual", "start"], ["virtual", "start", "android"],
                 ["virtual", "list"], ["virtual", "stop"], ["virtual", "heat"], ["virtual", "throttle"]):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_stop_unknown_address_is_one_line_error(tmp_path: Path) -> None:
    done = melt("virtual", "stop", "127.0.0.1:1", state=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: no virtual phone runs at 127.0.0.1:1")
    assert "Traceback" not in done.stderr


@pytest.mark.adb
def test_start_detach_list_heat_stop(tmp_path: Path, adb_server: AdbServer) -> None:
    port = free_port()
    started = melt("virtual", "start", "android", "--detach", "--port", str(port), state=tmp_path)
    assert started.returncode == 0, started.stderr
    address = started.stdout.strip()
    assert address == f"127.0.0.1:{port}"
    try:
        listed = json.loads(melt("virtual", "list", "--json", state=tmp_path).stdout)
        assert [p["address"] for p in listed] == [address]
        assert address in melt("virtual", "list", state=tmp_path).stdout
        serial = adb_server.connect(address)
        assert adb_server.run("-s", serial, "shell", "getprop ro.melt.virtual").stdout == "1\n"
        assert melt("virtual", "heat", address, "66", state=tmp_path).returncode == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            temp = adb_server.run("-s", serial, "shell", "cat /sys/class/thermal/thermal_zone0/temp").stdout
            if int(temp) > 60000:
                break
            time.sleep(0.1)
        assert int(temp) > 60000
        # hot enough to throttle by itself: "off" lifts the cap anyway, "on" brings it back
        cpu = "/sys/devices/system/cpu/cpu0/cpufreq"
        full = int(adb_server.run("-s", serial, "shell", f"cat {cpu}/cpuinfo_max_freq").stdout)

        def capped() -> bool:
            return int(adb_server.run("-s", serial, "shell", f"cat {cpu}/scaling_max_freq").stdout) < full

        for mode, want in (("off", False), ("on", True)):
            assert melt("virtual", "throttle", address, mode, state=tmp_path).returncode == 0
            deadline = time.monotonic() + 5
            while capped() != want and time.monotonic() < deadline:
                time.sleep(0.1)
            assert capped() == want, mode
    finally:
        stopped = melt("virtual", "stop", address, state=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped {address}"
    assert json.loads(melt("virtual", "list", "--json", state=tmp_path).stdout) == []
    assert adb_server.wait_state(address, ("offline", "absent")) in ("offline", "absent")
    adb_server.run("disconnect", address)


def test_foreground_start_prints_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MELT_VIRTUAL_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "melt.cli.main", "virtual", "start", "android",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)
    try:
        assert proc.stdout is not None
        assert readline(proc.stdout).strip() == f"127.0.0.1:{port}"
        stopped = melt("virtual", "stop", str(port), state=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
