"""The physical model of a running phone, driven by real work through adb."""

from __future__ import annotations

import time

import numpy as np
import pytest

from melt.virtual.config import VirtualPhoneConfig
from melt.virtual.phone import VirtualPhone
from melt.virtual.testing import AdbServer

pytestmark = pytest.mark.adb

SPIN = "timeout {s} sh -c 'while :; do :; done'"
#: a busy loop in the shell itself; prints its wall time (ns) then the shell's /proc stat
WORK = ("s=$(date +%s%N); i=0; while [ $i -lt {n} ]; do i=$((i+1)); done; "
        "e=$(date +%s%N); echo $((e - s)); cat /proc/$$/stat")


def device_time(adb: AdbServer, serial: str) -> float:
    return float(adb.run("-s", serial, "shell", "date +%s.%N").stdout)


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    assert predicate()


def test_real_cpu_use_drives_power_and_truth_energy(adb_server: AdbServer, adb_serial: str,
                                                    virtual_phone: VirtualPhone) -> None:
    cfg = VirtualPhoneConfig()
    t0 = device_time(adb_server, adb_serial)
    # the spin's CPU time as the kernel counted it: the shell's reaped-children ticks
    stat = adb_server.run("-s", adb_serial, "shell",
                          SPIN.format(s=3) + "; cat /proc/$$/stat").stdout
    t1 = device_time(adb_server, adb_serial)
    fields = stat[stat.rindex(")") + 2:].split()
    spin_cpu_s = (int(fields[13]) + int(fields[14])) / 100
    assert spin_cpu_s > 0.05  # it ran; the comparison below is what counts
    time.sleep(0.5)
    df = virtual_phone.read_truth()
    assert list(df.columns[:5]) == ["boottime_s", "monotonic_s", "realtime_s", "energy_j", "power_w"]
    assert np.all(np.diff(df["energy_j"]) >= 0)
    ticks = np.diff(df["monotonic_s"])
    assert 0.005 < np.median(ticks) < 0.02  # ~100 Hz
    # the model saw the CPU time the work really used (the host is shared: not a full core)
    w = df[(df.realtime_s > t0 - 0.2) & (df.realtime_s < t1 + 0.5)]
    dt = np.diff(w["monotonic_s"].to_numpy())
    seen_cpu_s = float(np.sum(w["busy_cores"].to_numpy()[1:] * dt))
    assert seen_cpu_s == pytest.approx(spin_cpu_s, rel=0.2, abs=0.15)
    # power = idle + screen + per-core active power x busy cores, row by row
    screen = cfg.power.screen_base_w + (cfg.power.screen_max_w - cfg.power.screen_base_w) * 128 / 255
    expected = cfg.power.idle_w + screen + cfg.power.core_active_w * w["busy_cores"]
    assert np.allclose(w["power_w"], expected, atol=2e-3)
    # the truth energy over a window is the integral of its power column
    integral = float(np.sum(w["power_w"].to_numpy()[1:] * dt))
    assert integral == pytest.approx(float(w["energy_j"].iloc[-1] - w["energy_j"].iloc[0]), rel=1e-3)
    assert virtual_phone.energy_between(t0, t1, clock="realtime_s") > (cfg.power.idle_w + screen) * (t1 - t0)


def test_background_work_is_accounted(adb_server: AdbServer, adb_serial: str,
                                      virtual_phone: VirtualPhone) -> None:
    t0 = device_time(adb_server, adb_serial)
    # the spin outlives its adb shell; its CPU time as the kernel counted it is written at the end
    out = "/data/local/tmp/spin.stat"
    adb_server.run("-s", adb_serial, "shell",
                   f"nohup sh -c \"{SPIN.format(s=2)}; cat /proc/\\$\\$/stat > {out}\" >/dev/null 2>&1 &")
    stat = virtual_phone.wait_for_file(out, timeout=20)
    fields = stat[stat.rindex(")") + 2:].split()
    spin_cpu_s = (int(fields[13]) + int(fields[14])) / 100
    assert spin_cpu_s > 0.05  # it ran, however busy the host is
    time.sleep(0.5)
    df = virtual_phone.read_truth()
    w = df[(df.realtime_s > t0 - 0.2) & (df.realtime_s < t0 + 3.0)]
    dt = np.diff(w["monotonic_s"].to_numpy())
    seen_cpu_s = float(np.sum(w["busy_cores"].to_numpy()[1:] * dt))
    # the model saw what the kernel counted (shared host: the spin's share, not a full core)
    assert seen_cpu_s == pytest.approx(spin_cpu_s, rel=0.25, abs=0.15)


def test_heat_injection_throttles_and_slows_work(adb_server: AdbServer, virtual_phone_factory) -> None:
    cfg = VirtualPhoneConfig.model_validate({"cpu": {"throttle_freq_fraction": 0.25}})
    virtual_phone = virtual_phone_factory(cfg)
    adb_serial = adb_server.connect(virtual_phone.address)

    def sh(script: str) -> str:
        return adb_server.run("-s", adb_serial, "shell", script).stdout

    def running_share() -> float:
        """CPU time / wall time of a busy loop: at most the duty cycle the phone allows it.

        Other load on a shared host only lowers it, so an upper bound is robust.
        """
        wall_ns, stat = sh(WORK.format(n=100000)).split("\n", 1)
        fields = stat[stat.rindex(")") + 2:].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / 100  # utime + stime of the shell, ticks
        return cpu_s / (int(wall_ns) / 1e9)

    zone = "/sys/class/thermal/thermal_zone0"
    fmax = int(sh("cat /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"))

    virtual_phone.set_temperature(70)
    wait_for(lambda: int(sh(f"cat {zone}/temp")) > 60000)
    wait_for(lambda: int(sh("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")) < fmax)
    assert int(sh("dumpsys thermalservice | sed -n 's/^Thermal Status: //p'")) >= 2
    # the work really ran about a quarter of the time (0.1 s duty cycle; 10 ms ticks)
    assert max(running_share() for _ in range(2)) < 0.25 + 0.15

    virtual_phone.set_temperature(25)
    virtual_phone.force_throttle(False)
    wait_for(lambda: int(sh("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")) == fmax)
    virtual_phone.force_throttle(True)
    wait_for(lambda: int(sh("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")) < fmax)
    df = virtual_phone.read_truth()
    assert df["throttled"].iloc[-1] == 1
    virtual_phone.force_throttle(None)
    adb_server.run("disconnect", adb_serial)


def test_battery_sign_convention_can_flip(adb_server: AdbServer, virtual_phone_factory) -> None:
    cfg = VirtualPhoneConfig.model_validate({"battery": {"current_sign": "positive-discharging"}})
    phone = virtual_phone_factory(cfg)
    serial = adb_server.connect(phone.address)
    try:
        current = adb_server.run("-s", serial, "shell", "cat /sys/class/power_supply/battery/current_now")
        assert int(current.stdout) > 0
        phone.plug_charger(True)
        wait_for(lambda: adb_server.run(
            "-s", serial, "shell", "cat /sys/class/power_supply/battery/status").stdout == "Charging\n")
    finally:
        adb_server.run("disconnect", serial)
