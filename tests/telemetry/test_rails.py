"""INA3221 rails: volts x amps per rail, the input rail as the device's power, energy per rail and phase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melt.config.specs import RailSpec, TelemetrySpec
from melt.telemetry.channels import plan_from_listing
from melt.telemetry.metrics import job_metrics
from melt.telemetry.phases import Phase, PhasePlan
from melt.telemetry.trace import parse_samples

SNAPSHOT = Path(__file__).resolve().parents[1] / "data/jetson-monitor/orin_nano/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
HW = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"


def _spec() -> TelemetrySpec:
    rails = [RailSpec(name=(SNAPSHOT / f"in{n}_label").read_text().strip(), voltage_file=f"{HW}/in{n}_input",
                      current_file=f"{HW}/curr{n}_input", total=n == 1, refresh_ms=50) for n in (1, 2, 3)]
    return TelemetrySpec(rails=rails, thermal_zones="all")


def test_rail_spec_needs_power_or_volts_and_amps() -> None:
    with pytest.raises(ValueError, match="give `power_file`, or both `voltage_file` and `current_file`"):
        RailSpec(name="x", voltage_file="/a")
    with pytest.raises(ValueError, match="give `power_file`, or both `voltage_file` and `current_file`"):
        RailSpec(name="x", power_file="/p", voltage_file="/a", current_file="/b")
    assert RailSpec(name="x", voltage_file="/a", current_file="/b").power_file is None


def test_rails_from_a_real_orin_nano_snapshot() -> None:
    plan = plan_from_listing("", _spec(), battery_dir=None)
    assert plan.power_rails == ("rail_vdd_in",) and plan.has_power
    assert "power" not in plan.missing
    assert plan.describe()["rail_refresh_ms"]["rail_vdd_in"] == 50
    raw = [(SNAPSHOT / f"{kind}{n}_input").read_text().strip() for n in (1, 2, 3) for kind in ("in", "curr")]
    samples = "".join(f"F {100 + i * 0.02:.2f} {' '.join(raw)} 1000\n" for i in range(20))
    trace = parse_samples(samples, "100.0 begin\n", "clock=realtime\n", plan)
    f = trace.frame
    # in1_input 5016 mV x curr1_input 1496 mA = 7.504 W (the snapshot's own numbers)
    assert f["rail_vdd_in_w"].iloc[0] == pytest.approx(5.016 * 1.496)
    assert f["rail_vdd_cpu_gpu_cv_w"].iloc[0] == pytest.approx(5.008 * 0.544)
    assert np.allclose(f["power_w"], f["rail_vdd_in_w"])


def test_energy_per_rail_and_phase() -> None:
    plan = plan_from_listing("", _spec(), battery_dir=None)
    lines = []
    for i in range(101):  # 0..1 s at 100 Hz: 5 V; VDD_IN 1 A then 2 A after 0.5 s
        amps = 1000 if i < 50 else 2000
        lines.append(f"F {i / 100:.2f} 5000 {amps} 5000 500 5000 100 1000")
    trace = parse_samples("\n".join(lines), "0 begin\n", "clock=realtime\n", plan)
    phases = PhasePlan([Phase("prefill", 0.0, 0.4, "marks"), Phase("decode", 0.5, 1.0, "marks")],
                       {"prefill": 4, "decode": 10})
    m = job_metrics(trace.frame, phases, (0.0, 1.0)).metrics
    assert m["energy_prefill_j"] == pytest.approx(5 * 0.4)
    assert m["energy_decode_j"] == pytest.approx(10 * 0.5)
    assert m["rail_vdd_in_energy_decode_j"] == pytest.approx(m["energy_decode_j"])
    assert m["rail_vdd_cpu_gpu_cv_energy_decode_j"] == pytest.approx(2.5 * 0.5)
    assert m["energy_per_token_decode_j"] == pytest.approx(0.5)
