"""A phone on a charger: flagged when it charged, trusted when its switch really cut the charger.

Two virtual phones with a charger plugged in: one whose charger a sysfs
switch can cut (``input_suspend``), one with no switch at all (only
``dumpsys battery unplug``, which changes what Android reports). The jobs
are short shell loops: what is checked is the verdict, not the energy.
"""

from __future__ import annotations

import pytest

from melt.config.specs import AdbSpec, DeviceSpec, StateSpec, TelemetrySpec
from melt.devices.state import DeviceState
from melt.frameworks.base import Invocation
from melt.runner.telemetry_executor import TelemetryExecutor

pytestmark = pytest.mark.adb

BURN = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"


def plugged_phone(factory, adb_server, switch: str):
    from melt.virtual.config import BatteryParams, ChargerParams, VirtualPhoneConfig

    cfg = VirtualPhoneConfig(battery=BatteryParams(charger_connected=True, initial_level_pct=60,
                                                   charger=ChargerParams(switch=switch)))
    phone = factory(cfg)
    phone.serial = adb_server.connect(phone.address)
    return phone


def device_for(phone, adb_server):
    from melt.devices.android import AndroidDevice

    spec = DeviceSpec(name="plugged", kind="android", virtual={},
                      adb=AdbSpec(serial=phone.serial, server_port=adb_server.port),
                      telemetry=TelemetrySpec(idle_s=0.5), state=StateSpec(charging="disabled"))
    return AndroidDevice.connect(spec)


def job(device):
    return TelemetryExecutor(health=False, cooldown=False).execute(
        device, [("decode", Invocation(("sh", "-c", BURN), timeout_s=60))])


def test_a_charging_phone_is_flagged_and_its_gauge_energy_is_not_consumption(virtual_phone_factory, adb_server):
    phone = plugged_phone(virtual_phone_factory, adb_server, "none")
    device = device_for(phone, adb_server)
    with DeviceState(device.transport, device.spec.state) as state:
        # the knob ran (dumpsys says unplugged) but could not cut the charger: it says so
        (charging,) = [r for r in state.reports if r.knob == "charging"]
        assert charging.applied and "no writable charger switch" in (charging.warning or "")
        e = job(device)
    m, prov = e.metrics, e.provenance
    assert m["charging"] == 1
    assert "energy_decode_j" not in m and "energy_decode_j_u95" not in m
    assert "charging" in prov["metrics_missing"]["energy_decode_j"]
    assert m["true_energy_decode_j"] > 0  # the phone did consume: the gauge just could not see it


def test_a_charger_cut_by_its_switch_is_not_flagged(virtual_phone_factory, adb_server):
    phone = plugged_phone(virtual_phone_factory, adb_server, "input_suspend")
    device = device_for(phone, adb_server)
    with DeviceState(device.transport, device.spec.state) as state:
        (charging,) = [r for r in state.reports if r.knob == "charging"]
        assert charging.applied and charging.warning is None
        phone.wait_for_file("/sys/class/power_supply/battery/status")
        e = job(device)
    assert e.metrics["charging"] == 0
    assert e.metrics["energy_decode_j"] > 0 and e.metrics["energy_decode_j_u95"] > 0
    # restored: the charger charges again, and a job now is flagged
    e = job(device)
    assert e.metrics["charging"] == 1 and "energy_decode_j" not in e.metrics
