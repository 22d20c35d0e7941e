"""Phone commands and the Android file layout, through adb shell."""

from __future__ import annotations

import re

import pytest

from melt.virtual.testing import AdbServer

pytestmark = pytest.mark.adb


@pytest.fixture
def sh(adb_server: AdbServer, adb_serial: str):
    def run(script: str) -> str:
        done = adb_server.run("-s", adb_serial, "shell", script)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def test_getprop_formats(sh) -> None:
    listing = sh("getprop")
    assert re.search(r"^\[ro\.product\.model\]: \[Melt Virtual Phone\]$", listing, re.M)
    assert "[ro.melt.virtual]: [1]" in listing
    assert sh("getprop ro.melt.virtual") == "1\n"
    assert sh("getprop no.such.prop") == "\n"
    sh("setprop debug.melt.test 42")
    assert sh("getprop debug.melt.test") == "42\n"


def test_android_layout(sh) -> None:
    assert sh("ls -d /data/local/tmp /sdcard /system/bin/getprop").split() == [
        "/data/local/tmp", "/sdcard", "/system/bin/getprop"]
    battery = sh("cd /sys/class/power_supply/battery && cat capacity current_now voltage_now temp status")
    capacity, current, voltage, temp, status = battery.split("\n")[:5]
    assert 0 <= int(capacity) <= 100
    assert int(current) < 0  # discharging, negative by the default sign convention
    assert 3_000_000 < int(voltage) < 4_500_000  # microvolts
    assert 100 < int(temp) < 600  # tenths of a degree
    assert status == "Discharging"
    zones = sh("for z in /sys/class/thermal/thermal_zone*; do echo $(cat $z/type) $(cat $z/temp); done")
    types = {line.split()[0]: int(line.split()[1]) for line in zones.strip().splitlines()}
    assert {"battery", "skin"} <= set(types)
    assert all(10_000 < t < 100_000 for t in types.values())  # millidegrees
    freqs = sh("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq "
               "/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq").split()
    assert 0 < int(freqs[0]) <= int(freqs[1])


def test_dumpsys_battery_and_overrides(sh) -> None:
    out = sh("dumpsys battery")
    assert out.startswith("Current Battery Service state:\n")
    level = int(re.search(r"^  level: (\d+)$", out, re.M).group(1))
    assert 0 <= level <= 100
    assert re.search(r"^  temperature: \d+$", out, re.M)
    sh("dumpsys battery unplug; dumpsys battery set level 42")
    out = sh("dumpsys battery")
    assert "UPDATES STOPPED" in out
    assert "  USB powered: false" in out and "  level: 42" in out
    sh("dumpsys battery reset")
    assert "UPDATES STOPPED" not in sh("dumpsys battery")


def test_dumpsys_thermalservice(sh) -> None:
    out = sh("dumpsys thermalservice")
    assert re.search(r"^Thermal Status: \d$", out, re.M)
    assert re.search(r"Temperature\{mValue=\d+\.\d, mType=2, mName=battery, mStatus=0\}", out)


def test_settings_svc_and_screen(sh) -> None:
    assert sh("settings get system screen_brightness") == "128\n"
    sh("settings put system screen_brightness 10")
    assert sh("settings get system screen_brightness") == "10\n"
    assert sh("cat /data/melt-virtual/settings/system/screen_brightness") == "10\n"
    assert sh("settings get global nothing_here") == "null\n"
    sh("svc power stayon usb")
    assert sh("settings get global stay_on_while_plugged_in") == "2\n"
    sh("settings put global stay_on_while_plugged_in 0")
    assert "Display Power: state=ON" in sh("dumpsys power")
    sh("input keyevent 26")
    assert "Display Power: state=OFF" in sh("dumpsys power")
    sh("input keyevent KEYCODE_WAKEUP")
    assert "mWakefulness=Awake" in sh("dumpsys power")
    sh("input keyevent 223")
    assert sh("cat /data/melt-virtual/state/screen") == "off\n"
