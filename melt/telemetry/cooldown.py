"""Pacing between jobs: cool down by temperature, check the battery.

:func:`wait_for_cooldown` polls one temperature until it is at or below
``CooldownSpec.max_temp_c`` (a timeout, never a fixed sleep) and says how long
it waited. :func:`check_battery` stops (raises :class:`BatteryTooLow`) or
pauses below ``DeviceSpec.min_battery_pct``. Both take ``clock`` and ``sleep``
so tests run them without waiting.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ContextManager

from melt.config.specs import CooldownSpec, TelemetrySpec
from melt.devices.base import Device
from melt.errors import DeviceUnavailableError
from melt.parsers.thermal import parse_thermal_zones
from melt.telemetry.channels import ANDROID_BATTERY_DIR


class BatteryTooLow(DeviceUnavailableError):
    """The battery is below the configured floor: the device takes no more jobs."""


@dataclass
class CooldownResult:
    """How a cool-down went: ``ok`` is False when it timed out."""

    ok: bool
    waited_s: float
    start_temp_c: float | None
    end_temp_c: float | None
    max_temp_c: float
    source: str  # which temperature was watched
    polls: int = 0
    reason: str | None = None
    readings: list[tuple[float, float]] = field(default_factory=list)  # (waited s, °C)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["readings"] = [[round(a, 3), round(b, 3)] for a, b in self.readings[-50:]]
        return d


def read_temperatures(device: Device, telemetry: TelemetrySpec | None = None) -> dict[str, float]:
    """Every thermal zone (``type`` -> °C) and the fuel gauge (``battery_gauge``), one shell call."""
    spec = telemetry or device.spec.telemetry
    td = shlex.quote(spec.thermal_dir.rstrip("/"))
    bat = shlex.quote(spec.battery.dir if spec.battery else ANDROID_BATTERY_DIR)
    script = (f"grep . {td}/thermal_zone*/type {td}/thermal_zone*/temp 2>/dev/null; "
              f"v=; read -r v < {bat}/temp 2>/dev/null && echo \"gauge $v\"; true")
    out = device.transport.shell(script, timeout=30, check=False).stdout
    temps: dict[str, float] = {}
    gauge = [line.split()[1] for line in out.splitlines() if line.startswith("gauge ")]
    for zone in parse_thermal_zones("\n".join(l for l in out.splitlines() if not l.startswith("gauge "))):
        if zone.get("type") is not None and zone.get("temp_c") is not None:
            temps.setdefault(zone["type"], float(zone["temp_c"]))
    if gauge:
        try:
            temps["battery_gauge"] = float(gauge[0]) / 10.0  # power-supply temp: tenths of °C
        except ValueError:
            pass
    return temps


def pick_temperature(temps: dict[str, float], zone: str | None, skin_zone: str | None) -> tuple[str, float] | None:
    """The watched temperature: ``zone``, else the skin zone, else the battery, else the hottest."""
    for name in (zone, skin_zone):
        if name and name in temps:
            return name, temps[name]
        if name == "battery" and "battery_gauge" in temps:
            return "battery_gauge", temps["battery_gauge"]
    if zone is None and skin_zone is None:
        if "battery_gauge" in temps:
            return "battery_gauge", temps["battery_gauge"]
        if temps:
            name = max(temps, key=lambda k: temps[k])
            return name, temps[name]
    return None


def wait_for_cooldown(device: Device, spec: CooldownSpec, *, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep,
                      telemetry: TelemetrySpec | None = None) -> CooldownResult:
    """Poll until the watched temperature is <= ``spec.max_temp_c`` or ``spec.timeout_s`` passes.

    Returns at once (``ok``) when already cool. A device with no temperature
    at all returns ``ok=False`` with the reason. Raises the transport's errors.
    """
    tel = telemetry or device.spec.telemetry
    t0 = clock()
    readings: list[tuple[float, float]] = []
    start: float | None = None
    source = "none"
    polls = 0
    while True:
        picked = pick_temperature(read_temperatures(device, tel), spec.zone, tel.skin_zone)
        polls += 1
        waited = clock() - t0
        if picked is None:
            return CooldownResult(False, waited, None, None, spec.max_temp_c, source, polls,
                                  f"no temperature {spec.zone or tel.skin_zone or ''} on this device".replace("  ", " "))
        source, temp = picked
        readings.append((waited, temp))
        if start is None:
            start = temp
        if temp <= spec.max_temp_c:
            return CooldownResult(True, waited, start, temp, spec.max_temp_c, source, polls, None, readings)
        if waited >= spec.timeout_s:
            return CooldownResult(False, waited, start, temp, spec.max_temp_c, source, polls,
                                  f"still {temp:.1f} °C ({source}) after {waited:.0f} s; "
                                  f"limit {spec.max_temp_c:g} °C", readings)
        sleep(min(spec.poll_s, max(0.0, spec.timeout_s - waited)) or spec.poll_s)


@dataclass
class BatteryCheck:
    ok: bool
    level_pct: float | None
    floor_pct: float | None
    waited_s: float = 0.0
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def battery_level(device: Device, telemetry: TelemetrySpec | None = None) -> float | None:
    """Battery level (%) from the fuel gauge's ``capacity`` file; None without a battery."""
    spec = telemetry or device.spec.telemetry
    bat = shlex.quote(spec.battery.dir if spec.battery else ANDROID_BATTERY_DIR)
    out = device.transport.shell(f"cat {bat}/capacity 2>/dev/null; true", timeout=30, check=False).stdout
    try:
        return float(out.split()[0])
    except (IndexError, ValueError):
        return None


def check_battery(device: Device, *, floor_pct: float | None = None, spec: CooldownSpec | None = None,
                  charging: Callable[[], ContextManager[Any]] | None = None,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep, margin_pct: float = 5.0) -> BatteryCheck:
    """Check the level against ``floor_pct`` (default ``DeviceSpec.min_battery_pct``).

    Below it, ``spec.on_low_battery`` decides: ``stop`` raises
    :class:`BatteryTooLow`; ``pause`` waits (inside ``charging()``, a context
    that lets the device charge, e.g. the charging knob restored) until the
    level is ``margin_pct`` above the floor, raising on ``battery_pause_timeout_s``.
    """
    floor = device.spec.min_battery_pct if floor_pct is None else floor_pct
    level = battery_level(device)
    if floor is None or level is None:
        return BatteryCheck(True, level, floor, reason=None if level is not None else "no battery level")
    if level >= floor:
        return BatteryCheck(True, level, floor)
    policy = spec or device.spec.cooldown or CooldownSpec()
    if policy.on_low_battery == "stop":
        raise BatteryTooLow(f"battery of {device.name} at {level:g}% is below the floor of {floor:g}%")
    t0 = clock()
    with (charging() if charging else contextlib.nullcontext()):
        while level is not None and level < floor + margin_pct:
            if clock() - t0 >= policy.battery_pause_timeout_s:
                raise BatteryTooLow(f"battery of {device.name} still at {level:g}% after charging for "
                                    f"{clock() - t0:.0f} s (floor {floor:g}%)")
            sleep(max(policy.poll_s, 30.0))
            level = battery_level(device)
    return BatteryCheck(True, level, floor, clock() - t0, "paused to charge")
