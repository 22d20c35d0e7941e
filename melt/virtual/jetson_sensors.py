"""What the virtual Jetson's sensors show: INA3221 readings and the board's memory. Pure: no I/O.

:func:`ina3221_reading` turns the power the model puts through a rail into
the bus voltage and current an INA3221 channel reports: the bus sags with
the load, the current is off by the shunt's gain error and noisy, and both
are rounded as the chip's registers are. :func:`board_meminfo` is the
``/proc/meminfo``-style text of the board's own RAM that its tegrastats reads.
"""

from __future__ import annotations

import math
import random

from melt.virtual.jetson_config import Ina3221Params, MemoryParams, RailParams


def ina3221_reading(rail: RailParams, sensor: Ina3221Params, watts: float,
                    rng: random.Random) -> tuple[int, int]:
    """(bus mV, current mA) an INA3221 channel shows while ``watts`` flow through ``rail``.

    The load draws ``I`` from a supply of ``voltage_mv`` behind ``supply_mohm``
    (``(V0 - I R) I = P``); the bus reads ``V0 - I R`` in steps of
    ``sensor.bus_lsb_mv``, the current ``I`` off by the rail's gain error,
    with the sensor's noise, in whole mA (never below 0).
    """
    v0, r = rail.voltage_mv / 1000.0, rail.supply_mohm / 1000.0
    disc = v0 * v0 - 4.0 * r * max(0.0, watts)
    amps = (v0 - math.sqrt(max(0.0, disc))) / (2.0 * r) if r > 0 else max(0.0, watts) / v0
    bus_mv = int(round((v0 - amps * r) * 1000.0 / sensor.bus_lsb_mv)) * sensor.bus_lsb_mv
    ma = amps * 1000.0 * (1.0 + rail.gain_error_pct / 100.0)
    if sensor.noise_ma > 0:
        ma += rng.gauss(0.0, sensor.noise_ma)
    return bus_mv, max(0, int(round(ma)))


def board_meminfo(memory: MemoryParams, rss_bytes: int) -> str:
    """The board's memory as ``/proc/meminfo`` lines: used = baseline + ``rss_bytes`` (capped)."""
    total_kb = memory.total_mb * 1024
    used_kb = min(total_kb, memory.baseline_used_mb * 1024 + max(0, rss_bytes) // 1024)
    swap_kb = memory.swap_total_mb * 1024
    return (f"MemTotal: {total_kb} kB\nMemAvailable: {total_kb - used_kb} kB\n"
            f"SwapTotal: {swap_kb} kB\nSwapFree: {swap_kb} kB")
