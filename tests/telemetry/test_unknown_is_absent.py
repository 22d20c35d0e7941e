"""What was not measured is absent with its reason, never a zero that reads as a measurement."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from melt.telemetry.charging import charging_state
from tests.helpers import need


def test_charging_is_unknown_when_nothing_about_the_battery_was_read():
    frame = pd.DataFrame({"t_s": np.linspace(0, 2, 21), "rss_bytes": np.full(21, 1e6)})
    state = charging_state(frame, "", (0.0, 2.0))
    assert state["charging"] is None and "no battery status" in state["note"]
    # one reading of a status file is enough to know
    marks = "1.0 decode_start /sys/class/power_supply/battery/status Discharging\n"
    assert charging_state(frame, marks, (0.0, 2.0))["charging"] is False


def test_a_job_on_a_machine_without_a_battery_has_no_charging_key(tmp_path):
    from melt.config.specs import DeviceSpec, TelemetrySpec
    from melt.devices.local import LocalDevice
    from melt.frameworks.base import Invocation
    from melt.runner.telemetry_executor import TelemetryExecutor
    from melt.transports.local import LocalTransport

    need(not any(Path("/sys/class/power_supply").glob("*")), "a machine without a battery or charger")
    spec = DeviceSpec(name="local", kind="local", workdir=str(tmp_path), telemetry=TelemetrySpec(idle_s=0))
    e = TelemetryExecutor(health=False, cooldown=False).execute(
        LocalDevice(spec, LocalTransport()), Invocation((sys.executable, "-c", "print('x')")))
    assert e.returncode == 0
    assert "charging" not in e.metrics
    assert "no battery status" in e.provenance["metrics_missing"]["charging"]
    assert e.provenance["battery"]["charging"] is None


def test_a_cached_idle_baseline_without_its_interval_is_measured_again(tmp_path):
    from melt.telemetry.baseline import BaselineStore, Conditions, IdleBaseline

    store = BaselineStore(tmp_path)
    store.put("k", IdleBaseline(1.5, "2026-01-01T00:00:00Z", 0.0, Conditions(temp_c=30.0), None, 0.02))
    assert store.get("k").u95_w == 0.02
    data = json.loads((tmp_path / "k.json").read_text())
    del data["u95_w"]  # written without one: reused it would claim to be exact
    (tmp_path / "k.json").write_text(json.dumps(data))
    assert store.get("k") is None
