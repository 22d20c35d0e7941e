"""Telemetry against the virtual phone: true energy, cool-down, throttling, Ctrl-C.

One phone serves the module (it shares the machine's cores: the jobs are short).
Its fuel gauge is the default one, the shipped phone's (4 refreshes a second,
2 mA of noise, a 0.4% gain error): the energy test checks the truth lies
near melt's interval. The realistic case (a
slow mA gauge, a real model) is tests/telemetry/test_energy_real.py.
"""

from __future__ import annotations

import io
import signal
import threading
import time

import pandas as pd
import pytest

from melt.config.specs import AdbSpec, CooldownSpec, DeviceSpec, StateSpec, TelemetrySpec
from melt.frameworks.base import Invocation
from melt.runner.telemetry_executor import TelemetryExecutor

pytestmark = pytest.mark.adb

#: about 4 s of one busy core in the phone's shell (mksh, here): long enough that the gauge's
#: edges (a 50 ms refresh at each end) stay well inside the 8% width checked below; at 2 s a
#: phase on this machine came out at 8.7%
BURN = "i=0; while [ $i -lt 2400000 ]; do i=$((i+1)); done"


@pytest.fixture(scope="module")
def phone(adb_server):
    from melt.virtual.config import CpuParams, RatesParams, VirtualPhoneConfig
    from melt.virtual.testing import virtual_phone

    cfg = VirtualPhoneConfig(rates=RatesParams(tick_hz=100, cpu_sample_hz=10, sysfs_hz=20),
                             cpu=CpuParams(throttle_temp_c=80, release_temp_c=70))
    with virtual_phone(cfg) as ph:
        ph.serial = adb_server.connect(ph.address)
        yield ph


def device_for(phone, adb_server, **kw):
    from melt.devices.android import AndroidDevice

    spec = DeviceSpec(name="virtual", kind="android", virtual={},
                      adb=AdbSpec(serial=phone.serial, server_port=adb_server.port), **kw)
    return AndroidDevice.connect(spec)


def burn(phase: str) -> tuple[str, Invocation]:
    return phase, Invocation(("sh", "-c", BURN), timeout_s=60)


def test_energy_per_phase_holds_the_truth_in_its_interval(phone, adb_server):
    device = device_for(phone, adb_server, telemetry=TelemetrySpec(idle_s=1.0))
    e = TelemetryExecutor(health=False).execute(device, [burn("prefill"), burn("decode")])
    m = e.metrics
    for phase in ("prefill", "decode"):
        measured, true, u95 = m[f"energy_{phase}_j"], m[f"true_energy_{phase}_j"], m[f"energy_{phase}_j_u95"]
        print(f"{phase}: measured {measured:.4f} +- {u95:.4f} J, true {true:.4f} J, "
              f"error {100 * (measured - true) / true:+.2f}%")
        # one draw of a 95% interval misses one time in twenty, and this test takes two: the
        # interval's coverage is checked over 40 phases in test_uncertainty.py. Here the error
        # must stay inside 1.5 times the interval (past 2.9 sigma of its random part), and the
        # interval itself narrow.
        assert abs(measured - true) <= 1.5 * u95, (phase, measured, true, u95)
        assert u95 < 0.08 * true, (phase, u95, true)
    assert m["energy_decode_j_net"] < m["energy_decode_j"]
    # the achieved rate and the sampler's CPU depend on this machine's load: their targets
    # (>= 50 Hz at <= 2% of a core) are in bench/bench_sampler.py. Here: what is reported is
    # what the trace holds, and never more than was asked for.
    trace = pd.read_parquet(io.BytesIO(e.files["trace.parquet"]))
    t = trace["t_s"].to_numpy()
    assert m["sample_rate_hz"] == pytest.approx((t.size - 1) / (t[-1] - t[0]), rel=1e-6)
    assert 0 < m["sample_rate_hz"] <= 1.02 * device.spec.telemetry.sample_hz
    assert 0 <= m["sampler_cpu_pct"] < 100
    assert e.provenance["telemetry"]["truth"]


def test_next_job_starts_only_after_cooling_below_the_threshold(phone, adb_server):
    device = device_for(phone, adb_server, telemetry=TelemetrySpec(idle_s=0),
                        cooldown=CooldownSpec(max_temp_c=45, zone="cpu-0-0", timeout_s=120, poll_s=0.5))
    phone.set_temperature(60, "soc")
    phone.wait_for_file("/sys/class/thermal/thermal_zone0/temp")
    time.sleep(0.3)
    e = TelemetryExecutor(health=False).execute(device, Invocation(("sleep", "0.3")))
    cool = e.provenance["cooldown"]
    assert cool["ok"] and cool["start_temp_c"] > 45 and cool["end_temp_c"] <= 45 and cool["waited_s"] > 0
    import io

    import pandas as pd

    trace = pd.read_parquet(io.BytesIO(e.files["trace.parquet"]))
    assert trace["temp_cpu_0_0_c"].dropna().iloc[0] <= 45.5


def test_an_injected_throttle_is_flagged(phone, adb_server):
    device = device_for(phone, adb_server, telemetry=TelemetrySpec(idle_s=0.5))
    done = threading.Event()

    def throttle_once_decoding() -> None:  # not on a timer: a loaded machine starts jobs late
        jobs = phone.host_path("/data/local/tmp/melt/jobs")
        while not done.is_set():
            if any("decode_start" in (m.read_text() if m.exists() else "") for m in jobs.glob("*/marks")):
                time.sleep(0.5)
                phone.force_throttle(True)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=throttle_once_decoding, daemon=True)
    watcher.start()
    try:
        e = TelemetryExecutor(health=True).execute(device, [burn("decode")])
    finally:
        done.set()
        watcher.join(5)
        phone.force_throttle(None)
    assert e.metrics["throttled"] == 1
    assert e.provenance["throttled_intervals"]
    # the job started unthrottled: the cap dropped while it ran
    assert e.provenance["throttled_intervals"][0]["start_s"] > 0
    assert e.provenance["health"]["before"]["cpufreq"]["cpu0"]["max_khz"] == 2400000


#: a duration no other process has: the phone's `ps` also lists this machine's processes
NAP = "20.4137"


def test_ctrl_c_restores_brightness_charging_and_screen(phone, adb_server):
    from melt.devices.state import DeviceState

    device = device_for(phone, adb_server, telemetry=TelemetrySpec(idle_s=0),
                        state=StateSpec(screen="off", brightness=5, charging="disabled", stay_awake=True))
    t = device.transport

    def look() -> str:
        return t.shell("settings get system screen_brightness; dumpsys power | grep -E 'mWakefulness=|mStayOnWhile';"
                       " cat /sys/class/power_supply/battery/input_suspend; dumpsys battery | head -2").stdout

    before = look()
    main = threading.main_thread().ident
    timer = threading.Timer(2.0, lambda: signal.pthread_kill(main, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        with DeviceState(t, device.spec.state):
            assert "Asleep" in look() and "UPDATES STOPPED" in look()
            timer.start()
            TelemetryExecutor(health=False).execute(device, Invocation(("sleep", NAP)))
    timer.cancel()
    after = look()
    assert after == before
    assert "128" in after and "Awake" in after and "UPDATES STOPPED" not in after
    left = t.shell("ps -A -o args 2>/dev/null || ps -eo args").stdout
    assert f"sleep {NAP}" not in [line.strip() for line in left.splitlines()]
