"""The virtual Jetson's sensors alone: INA3221 readings and the board's memory."""

from __future__ import annotations

import random
import statistics

import pytest

from melt.virtual.jetson_config import Ina3221Params, MemoryParams, VirtualJetsonConfig, load_jetson_config
from melt.virtual.jetson_sensors import board_meminfo, ina3221_reading
from tests.helpers import ROOT


def test_code_defaults_are_the_shipped_boards_sensors() -> None:
    shipped = load_jetson_config(ROOT / "device_configs/virtual-jetson.yaml")
    default = VirtualJetsonConfig()
    assert shipped.rails == default.rails and shipped.ina3221 == default.ina3221
    assert shipped.memory == default.memory
    # no rail is an ideal sensor: each has a gain error and a supply that sags
    assert all(r.gain_error_pct != 0 and r.supply_mohm > 0 for r in default.rails)
    assert default.ina3221.noise_ma > 0


def test_the_input_rail_reads_its_power_only_up_to_gain_noise_and_sag() -> None:
    rail, sensor = VirtualJetsonConfig().rails[0], Ina3221Params()
    rng = random.Random(1)
    idle = [ina3221_reading(rail, sensor, 4.6, rng) for _ in range(4000)]
    busy = [ina3221_reading(rail, sensor, 7.2, rng) for _ in range(4000)]
    # the bus sags by I x R: about 2.5 W / 5 V x 45 mOhm = 23 mV more under load
    v_idle, v_busy = statistics.mean(v for v, _ in idle), statistics.mean(v for v, _ in busy)
    assert v_idle < rail.voltage_mv and v_busy < v_idle - 16
    assert all(v % sensor.bus_lsb_mv == 0 for v, _ in idle + busy)
    # V x I reads the rail's gain error high (+0.6%), scattered by the noise (4 mA at 5 V)
    for watts, readings in ((4.6, idle), (7.2, busy)):
        shown = [v * a / 1e6 for v, a in readings]
        assert statistics.mean(shown) == pytest.approx(watts * (1 + rail.gain_error_pct / 100), rel=0.001)
        assert statistics.stdev(shown) == pytest.approx(5.0 * sensor.noise_ma / 1000, rel=0.15)


def test_board_memory_is_its_own_total_with_what_it_runs_on_top() -> None:
    mem = MemoryParams(total_mb=7620, baseline_used_mb=1100, swap_total_mb=3810)
    lines = dict(line.split(":") for line in board_meminfo(mem, 300 * 1024 * 1024).splitlines())
    kb = {k: int(v.split()[0]) for k, v in lines.items()}
    assert kb["MemTotal"] == 7620 * 1024
    assert kb["MemTotal"] - kb["MemAvailable"] == (1100 + 300) * 1024
    full = dict(line.split(":") for line in board_meminfo(mem, 10**13).splitlines())
    assert int(full["MemAvailable"].split()[0]) == 0  # never more used than the board has
