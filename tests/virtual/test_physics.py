"""The physical model alone: energy, heat, fuel gauge, throttling."""

from __future__ import annotations

import pytest

from melt.virtual.config import VirtualPhoneConfig
from melt.virtual.physics import PhysicsModel


def run(model: PhysicsModel, seconds: float, busy: float, dt: float = 0.01) -> None:
    for _ in range(int(round(seconds / dt))):
        model.step(dt, busy)


def test_energy_is_integral_of_power() -> None:
    model = PhysicsModel(VirtualPhoneConfig())
    model.state.screen_on = False
    run(model, 10, busy=0.0)
    idle = VirtualPhoneConfig().power.idle_w
    assert model.state.energy_j == pytest.approx(idle * 10, rel=1e-6)
    run(model, 10, busy=2.0)
    cfg = VirtualPhoneConfig().power
    assert model.state.energy_j == pytest.approx(idle * 20 + 2 * cfg.core_active_w * 10, rel=1e-6)


def test_load_heats_and_idle_cools_towards_ambient() -> None:
    model = PhysicsModel(VirtualPhoneConfig())
    model.state.screen_on = False
    run(model, 300, busy=2.0)
    hot = model.state.soc_c
    assert hot > 35
    assert 25 < model.state.body_c < hot
    run(model, 1200, busy=0.0)
    assert model.state.soc_c - 25 < (hot - 25) / 2


def test_battery_drains_and_voltage_sags_under_load() -> None:
    model = PhysicsModel(VirtualPhoneConfig())
    model.step(0.01, 0.0)
    v_idle, q0 = model.state.voltage_v, model.state.charge_c
    model.step(0.01, 4.0)
    assert model.state.voltage_v < v_idle
    assert model.state.current_a > 0
    run(model, 100, busy=4.0)
    assert model.state.charge_c < q0
    # charge drawn == integral of current
    assert q0 - model.state.charge_c == pytest.approx(model.state.current_a * 100.02, rel=0.05)


def test_charger_pushes_current_in() -> None:
    cfg = VirtualPhoneConfig.model_validate({"battery": {"charger_connected": True}})
    model = PhysicsModel(cfg)
    model.step(0.01, 0.0)
    assert model.state.current_a < 0
    assert model.battery_status() == "Charging"


def test_throttles_above_threshold_with_hysteresis() -> None:
    cfg = VirtualPhoneConfig()
    model = PhysicsModel(cfg)
    model.set_temperature(cfg.cpu.throttle_temp_c + 1)
    model.step(0.01, 0.0)
    assert model.state.throttled and model.state.freq_fraction == cfg.cpu.throttle_freq_fraction
    model.set_temperature((cfg.cpu.throttle_temp_c + cfg.cpu.release_temp_c) / 2)
    model.step(0.01, 0.0)
    assert model.state.throttled
    model.set_temperature(cfg.cpu.release_temp_c - 1)
    model.step(0.01, 0.0)
    assert not model.state.throttled
    model.force_throttle = True
    model.step(0.01, 0.0)
    assert model.state.throttled


def test_throttled_busy_second_costs_less() -> None:
    model = PhysicsModel(VirtualPhoneConfig())
    full = model.load_power(1.0)
    model.force_throttle = True
    model.step(0.01, 1.0)
    assert model.load_power(1.0) < full


def test_ocv_interpolates_the_curve() -> None:
    model = PhysicsModel(VirtualPhoneConfig())
    assert model.ocv(0.0) == pytest.approx(3.40)
    assert model.ocv(1.0) == pytest.approx(4.35)
    assert 3.70 < model.ocv(0.35) < 3.80


def test_config_rejects_inverted_thresholds() -> None:
    with pytest.raises(ValueError, match="cpu.release_temp_c must be <= cpu.throttle_temp_c"):
        VirtualPhoneConfig.model_validate({"cpu": {"throttle_temp_c": 40, "release_temp_c": 50}})
    assert VirtualPhoneConfig.model_validate({"cpu": {"throttle_temp_c": 50, "release_temp_c": 40}})


def test_the_default_gauge_is_the_shipped_phones_noisy_one() -> None:
    import statistics

    from melt.virtual.config import GaugeParams, load_config
    from melt.virtual.gauge import FuelGauge
    from tests.helpers import ROOT

    shipped = load_config(ROOT / "device_configs/virtual-phone.yaml")
    assert VirtualPhoneConfig().battery.gauge == shipped.battery.gauge == GaugeParams()
    # what it reports for a steady 0.5 A: 0.4% high, 2 mA of scatter, never the truth itself
    gauge = FuelGauge(GaugeParams(), sign=1)
    readings = []
    for n in range(4000):
        if gauge.feed(n * 0.01, 0.01, 0.5, 3.8):
            readings.append(gauge.current_raw)
    assert statistics.mean(readings) == pytest.approx(500_000 * 1.004, abs=300)
    assert statistics.stdev(readings) == pytest.approx(2000, rel=0.15)
    # the sensor without noise or gain error exists only by name
    ideal = FuelGauge(GaugeParams.ideal(), sign=1)
    assert all(ideal.current_raw == 500_000 for n in range(100) if ideal.feed(n * 0.01, 0.01, 0.5, 3.8))
