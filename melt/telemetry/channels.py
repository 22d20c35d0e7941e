"""Which files the on-device sampler reads, and how each becomes a trace column.

:func:`discover_channels` asks the device once (one shell call) what it has:
the fuel gauge, thermal zones, cpufreq files, cooling devices. The result, a
:class:`ChannelPlan`, tells the runner script which files to read every tick
(``fast``: current, voltage, power rails) and every few ticks (``slow``:
battery level and temperature, thermal zones, frequencies) and tells
:mod:`melt.telemetry.trace` how to turn each raw number into its column.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

from melt.config.specs import BatterySpec, TelemetrySpec
from melt.parsers.thermal import parse_thermal_zones
from melt.telemetry.energy import CURRENT_FACTORS_A, POWER_FACTORS_W, VOLTAGE_FACTORS_V, guess_current_unit
from melt.transports.base import Transport

#: how a raw reading becomes the column's unit
Convert = Literal["scale", "temp_auto", "tenths"]

ANDROID_BATTERY_DIR = "/sys/class/power_supply/battery"
#: cooling devices that slow the work itself (others, like a charger's or a modem's, do not)
COMPUTE_COOLING = re.compile(r"cpu|gpu|tpu|npu|cluster|devfreq|thermal-cpufreq|big|little|mid", re.I)
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./:@+\-]+$")


@dataclass(frozen=True)
class Channel:
    """One device file and the trace column it feeds."""

    column: str  # unit in the name: current_ua, temp_skin_c, cpufreq_cpu0_khz ...
    path: str
    convert: Convert = "scale"
    factor: float = 1.0  # for "scale": column = raw * factor


@dataclass(frozen=True)
class ChannelPlan:
    """Everything the sampler reads on one device."""

    fast: tuple[Channel, ...] = ()
    slow: tuple[Channel, ...] = ()
    battery_dir: str | None = None
    current_unit: str | None = None  # as configured or guessed, for provenance
    current_sign: str | None = None
    missing: dict[str, str] = field(default_factory=dict)  # what is not sampled, and why
    #: rails (``rail_<name>`` stems) whose power adds up to ``power_w`` when there is no fuel gauge
    power_rails: tuple[str, ...] = ()
    #: rail stem -> the sensor's effective refresh (ms), where the device config gives it
    rail_refresh_ms: dict[str, float] = field(default_factory=dict)
    mark_files: tuple[str, ...] = ()  # read at each runner mark (battery status, chargers online)

    @property
    def has_power(self) -> bool:
        cols = {c.column for c in self.fast}
        return "power_w" in cols or {"current_ua", "voltage_uv"} <= cols or bool(self.power_rails)

    def columns(self) -> list[str]:
        return [c.column for c in (*self.fast, *self.slow)]

    def describe(self) -> dict[str, Any]:
        """Provenance: what was sampled from where."""
        return {
            "fast": {c.column: c.path for c in self.fast},
            "slow": {c.column: c.path for c in self.slow},
            "battery_dir": self.battery_dir,
            "current_unit": self.current_unit,
            "current_sign": self.current_sign,
            "missing": dict(self.missing),
            **({"power_rails": list(self.power_rails)} if self.power_rails else {}),
            **({"rail_refresh_ms": dict(self.rail_refresh_ms)} if self.rail_refresh_ms else {}),
        }


def column_name(text: str) -> str:
    """``cpu-0-0`` -> ``cpu_0_0``: lower case, ``[a-z0-9_]`` only."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return name or "zone"


def _discovery_script(battery_dir: str | None, spec: TelemetrySpec) -> str:
    bat = shlex.quote(battery_dir) if battery_dir else ""
    thermal = shlex.quote(spec.thermal_dir.rstrip("/"))
    lines = [
        'for d in /sys/class/power_supply/*; do t=; read -r t < "$d/type" 2>/dev/null;'
        ' s=; read -r s < "$d/status" 2>/dev/null; echo "supply $d ${t:-?} ${s:-?}"; done',
    ]
    if bat:
        lines.append(
            f"for f in current_now voltage_now power_now capacity temp status charge_counter charge_full; do"
            f' [ -r {bat}/"$f" ] && v= && read -r v < {bat}/"$f" 2>/dev/null && echo "battery $f $v"; done'
        )
    lines.append(f"grep . {thermal}/thermal_zone*/type 2>/dev/null")
    lines.append(
        f'for f in {spec.cpufreq_glob}; do [ -r "$f" ] && echo "cpufreq $f"; done'
    )
    lines.append(
        f'for f in {thermal}/cooling_device*/cur_state; do [ -r "$f" ] && {{ t=;'
        f' read -r t < "${{f%/cur_state}}/type" 2>/dev/null; echo "cooling $f ${{t:-?}}"; }}; done'
    )
    lines.append("true")
    return "\n".join(lines)


def _current_sign_guess(status: str | None, current: float | None, default: str) -> str:
    if status is None or current is None or current == 0:
        return default
    if status.lower().startswith("discharging"):
        return "negative-discharging" if current < 0 else "positive-discharging"
    if status.lower().startswith("charging"):
        return "positive-discharging" if current < 0 else "negative-discharging"
    return default


def plan_from_listing(text: str, spec: TelemetrySpec, *, battery_dir: str | None) -> ChannelPlan:
    """Build the plan from the discovery script's output (pure; see module doc)."""
    missing: dict[str, str] = {}
    supplies: list[tuple[str, str, str]] = []
    battery: dict[str, str] = {}
    cpufreq: list[str] = []
    cooling: list[tuple[str, str]] = []
    zone_lines: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "supply" and len(parts) >= 4:
            supplies.append((parts[1], parts[2], " ".join(parts[3:])))
        elif parts[0] == "battery" and len(parts) >= 2:
            battery[parts[1]] = " ".join(parts[2:])
        elif parts[0] == "cpufreq" and len(parts) == 2:
            cpufreq.append(parts[1])
        elif parts[0] == "cooling" and len(parts) >= 2:
            cooling.append((parts[1], " ".join(parts[2:]) or "?"))
        elif "thermal_zone" in parts[0]:
            zone_lines.append(line)

    fast: list[Channel] = []
    slow: list[Channel] = []
    unit = sign = None
    if battery_dir and battery:
        cfg = spec.battery or BatterySpec(dir=battery_dir)
        if "current_now" in battery and "voltage_now" in battery:
            unit = cfg.current_unit
            sign = cfg.current_sign
            if unit == "auto":  # from the magnitude of the reading now (a phone awake draws > 20 mA)
                try:
                    unit = guess_current_unit([float(battery["current_now"])])
                except ValueError:
                    unit = "uA"
            if spec.battery is None:  # not configured: infer the sign from the status
                try:
                    raw = float(battery["current_now"])
                except ValueError:
                    raw = None
                sign = _current_sign_guess(battery.get("status"), raw, cfg.current_sign)
            cur = 1.0 if unit == "uA" else 1000.0
            fast.append(Channel("current_ua", f"{battery_dir}/current_now", "scale",
                                -cur if sign == "negative-discharging" else cur))
            fast.append(Channel("voltage_uv", f"{battery_dir}/voltage_now", "scale",
                                1.0 if cfg.voltage_unit == "uV" else 1000.0))
        elif "power_now" in battery:
            fast.append(Channel("power_w", f"{battery_dir}/power_now", "scale", 1e-6))
        else:
            missing["power"] = f"{battery_dir} has no current_now/voltage_now or power_now"
        if "capacity" in battery:
            slow.append(Channel("battery_pct", f"{battery_dir}/capacity"))
        if "temp" in battery:
            slow.append(Channel("battery_temp_c", f"{battery_dir}/temp", "tenths"))
        if "charge_counter" in battery:
            slow.append(Channel("charge_counter_uah", f"{battery_dir}/charge_counter"))
            if "charge_full" in battery:
                slow.append(Channel("charge_full_uah", f"{battery_dir}/charge_full"))
    elif battery_dir:
        missing["power"] = f"no readable fuel gauge files in {battery_dir}"
    else:
        missing["power"] = "no battery fuel gauge on this device"
    for supply, stype, _status in supplies:  # is a charger plugged in? (charging contamination)
        col = {"usb": "usb_online", "mains": "ac_online", "usb_pd": "usb_online"}.get(stype.lower())
        if col and col not in {c.column for c in slow}:
            slow.append(Channel(col, f"{supply}/online"))

    power_rails: list[str] = []
    refresh: dict[str, float] = {}
    for rail in spec.rails:
        stem = f"rail_{column_name(rail.name)}"
        if rail.power_file:
            fast.append(Channel(f"{stem}_w", rail.power_file, "scale", POWER_FACTORS_W[rail.unit]))
        else:  # volts x amps, multiplied in the trace (melt.telemetry.trace)
            fast.append(Channel(f"{stem}_v", str(rail.voltage_file), "scale",
                                VOLTAGE_FACTORS_V[rail.voltage_unit]))
            fast.append(Channel(f"{stem}_a", str(rail.current_file), "scale",
                                CURRENT_FACTORS_A[rail.current_unit]))
        if rail.total:
            power_rails.append(stem)
        if rail.refresh_ms:
            refresh[stem] = rail.refresh_ms
    if power_rails and not any(c.column in ("current_ua", "power_w") for c in fast):
        missing.pop("power", None)  # the rails measure the device's power
    else:
        power_rails = []

    zones = parse_thermal_zones("\n".join(zone_lines))
    wanted = spec.thermal_zones
    seen: set[str] = set()
    thermal_dir = spec.thermal_dir.rstrip("/")
    for zone in zones:
        ztype = zone.get("type")
        if ztype is None or "zone" not in zone:
            continue
        if wanted != "all" and ztype not in wanted:
            continue
        name = f"temp_{column_name(ztype)}_c"
        if name in seen:
            name = f"temp_{column_name(ztype)}_{zone['zone']}_c"
        seen.add(name)
        slow.append(Channel(name, f"{thermal_dir}/thermal_zone{zone['zone']}/temp", "temp_auto"))
    if wanted != "all":
        found = {z.get("type") for z in zones}
        for ztype in wanted:
            if ztype not in found:
                missing[f"temp_{column_name(ztype)}_c"] = f"no thermal zone of type {ztype!r}"
    if not any(c.column.startswith("temp_") for c in slow):
        missing.setdefault("thermal", "no thermal zones readable")

    def cpu_index(path: str) -> int:
        m = re.search(r"cpu(\d+)", path)
        return int(m.group(1)) if m else -1

    for path in sorted(cpufreq, key=cpu_index):
        n = cpu_index(path)
        if n < 0:
            continue
        slow.append(Channel(f"cpufreq_cpu{n}_khz", path))
        if path.endswith("scaling_cur_freq") or path.endswith("cpuinfo_cur_freq"):
            cap = path.rsplit("/", 1)[0] + "/scaling_max_freq"
            slow.append(Channel(f"cpufreq_max_cpu{n}_khz", cap))
    if not cpufreq:
        missing["cpufreq"] = "no cpufreq files readable"
    for path, ctype in cooling if spec.cooling_devices else []:
        m = re.search(r"cooling_device(\d+)", path)
        if m and (ctype == "?" or COMPUTE_COOLING.search(ctype)):
            slow.append(Channel(f"cooling_{m.group(1)}_state", path))

    bad = [c.path for c in (*fast, *slow) if not _SAFE_PATH.match(c.path)]
    if bad:
        fast = [c for c in fast if c.path not in bad]
        slow = [c for c in slow if c.path not in bad]
        missing["unsafe_paths"] = ", ".join(bad)
    marks = tuple(p for p in ([f"{battery_dir}/status"] if battery_dir and "status" in battery else [])
                  + [c.path for c in slow if c.column in ("usb_online", "ac_online")]
                  if _SAFE_PATH.match(p))
    return ChannelPlan(tuple(fast), tuple(slow), battery_dir if battery else None, unit, sign, missing,
                       tuple(power_rails), refresh, marks)


def find_battery_dir(listing: str) -> str | None:
    """The first power supply whose type is ``Battery`` in a discovery listing."""
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "supply" and parts[2].lower() == "battery":
            return parts[1]
    return None


def discover_channels(transport: Transport, spec: TelemetrySpec) -> ChannelPlan:
    """Ask the device which sensors it has; see :func:`plan_from_listing`.

    The fuel gauge is ``spec.battery.dir`` when configured, else the first
    power supply of type ``Battery``. Raises the transport's errors.
    """
    battery_dir = spec.battery.dir if spec.battery else None
    if battery_dir is None:
        first = transport.shell(_discovery_script(None, spec), timeout=30, check=False).stdout
        battery_dir = find_battery_dir(first)
        if battery_dir is None:
            return plan_from_listing(first, spec, battery_dir=None)
    listing = transport.shell(_discovery_script(battery_dir, spec), timeout=30, check=False).stdout
    return plan_from_listing(listing, spec, battery_dir=battery_dir)
