"""Android battery state: ``dumpsys battery`` and power-supply ``uevent`` files.

``parse_dumpsys_battery`` (kind ``dumpsys-battery``) returns one dict:
``level_pct``, ``scale``, ``voltage_mv``, ``temperature_c`` (dumpsys prints
tenths of °C), ``status`` (the integer code) and ``status_name``, ``health``
and ``health_name``, ``plugged`` (``{"ac", "usb", "wireless", "dock"}``
booleans, only those printed), ``present``, ``technology``,
``charge_counter_uah``, ``max_charging_current_ua``,
``max_charging_voltage_uv`` and ``current_now_ua`` when present. AOSP prints
``current now`` in µA; some vendor builds (Samsung) print mA, so a non-zero
magnitude under 20 000 is read as mA and scaled (no phone that is awake draws
under 20 mA); the value as printed stays in ``current_now_raw``.

``parse_power_supply_uevent`` (kind ``power-supply-uevent``) reads
``/sys/class/power_supply/*/uevent`` text, with or without the
``POWER_SUPPLY_`` prefix: ``capacity_pct``, ``voltage_now_uv``,
``current_now_ua``, ``temp_c`` (tenths in the file), ``status``, and every
other key lower-cased with its raw string value. ``parse_power_supply_uevents``
returns one such dict per supply when several files were concatenated.
"""

from __future__ import annotations

import re
from typing import Any

from melt.parsers._num import to_bool, to_float, to_int

STATUS_NAMES = {1: "unknown", 2: "charging", 3: "discharging", 4: "not charging", 5: "full"}
HEALTH_NAMES = {1: "unknown", 2: "good", 3: "overheat", 4: "dead", 5: "over voltage",
                6: "unspecified failure", 7: "cold"}
_KV = re.compile(r"^\s*(?P<k>[A-Za-z][\w()./-]*(?: [\w()./-]+)*)\s*:(?P<v>.*)$")
_UEVENT = re.compile(r"^\s*(?:POWER_SUPPLY_)?(?P<k>[A-Z][A-Z0-9_]*)\s*=(?P<v>.*)$")


def _current_ua(raw: str) -> int | None:
    value = to_int(raw)
    if value is None:
        return None
    return value * 1000 if 0 < abs(value) < 20000 else value


def parse_dumpsys_battery(text: str) -> dict[str, Any]:
    """Parse ``adb shell dumpsys battery`` output into one dict (see module doc).

    Returns ``{}`` when no battery field is found. Never raises.
    """
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        m = _KV.match(line)
        if m:
            fields.setdefault(m.group("k").strip().lower(), m.group("v").strip())
    rec: dict[str, Any] = {}
    rec["level_pct"] = to_int(fields.get("level"))
    rec["scale"] = to_int(fields.get("scale"))
    voltage = to_int(fields.get("voltage"))
    if voltage is not None and voltage > 100000:  # a few builds print µV
        voltage = voltage // 1000
    rec["voltage_mv"] = voltage
    temp = to_float(fields.get("temperature"))
    rec["temperature_c"] = round(temp / 10, 2) if temp is not None else None
    for key in ("status", "health"):
        code = to_int(fields.get(key))
        if code is not None:
            rec[key] = code
            rec[f"{key}_name"] = (STATUS_NAMES if key == "status" else HEALTH_NAMES).get(code)
        elif fields.get(key):
            rec[key + "_name"] = fields[key].lower()
    plugged = {name: to_bool(fields[f"{name} powered"]) for name in ("ac", "usb", "wireless", "dock")
               if f"{name} powered" in fields}
    plugged = {k: v for k, v in plugged.items() if v is not None}
    if plugged:
        rec["plugged"] = plugged
    rec["present"] = to_bool(fields.get("present", ""))
    rec["technology"] = fields.get("technology") or None
    rec["charge_counter_uah"] = to_int(fields.get("charge counter"))
    rec["max_charging_current_ua"] = to_int(fields.get("max charging current"))
    rec["max_charging_voltage_uv"] = to_int(fields.get("max charging voltage"))
    current = fields.get("current now")
    if current is not None:
        rec["current_now_ua"] = _current_ua(current)
        rec["current_now_raw"] = to_int(current)
    return {k: v for k, v in rec.items() if v is not None}


def _scaled_micro(raw: str) -> int | None:
    """``4123000`` -> 4123000; ``4.123`` (acc prints volts/amps) -> 4123000."""
    value = to_float(raw)
    if value is None:
        return None
    if "." in raw and abs(value) < 100:
        return int(round(value * 1_000_000))
    return int(value)


def _one_supply(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for key, value in pairs:
        raw[key.lower()] = value
    rec["capacity_pct"] = to_int(raw.get("capacity"))
    if "voltage_now" in raw:
        rec["voltage_now_uv"] = _scaled_micro(raw["voltage_now"])
    if "current_now" in raw:
        rec["current_now_ua"] = _scaled_micro(raw["current_now"])
    if "temp" in raw:
        temp = to_float(raw["temp"])
        if temp is not None:
            rec["temp_c"] = temp if "." in raw["temp"] else round(temp / 10, 2)
    rec["status"] = raw.get("status") or None
    out = {k: v for k, v in rec.items() if v is not None}
    consumed = {"capacity": "capacity_pct", "voltage_now": "voltage_now_uv",
                "current_now": "current_now_ua", "temp": "temp_c", "status": "status"}
    for key, value in raw.items():
        if consumed.get(key) not in out:
            out.setdefault(key, value)
    return out


def parse_power_supply_uevents(text: str) -> list[dict[str, Any]]:
    """Parse one or more concatenated power-supply uevent files; one dict per supply.

    A new supply starts at a second ``NAME=`` line or when a key repeats.
    Returns ``[]`` when no ``KEY=value`` line is found. Never raises.
    """
    supplies: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in str(text).splitlines():
        m = _UEVENT.match(line)
        if not m:
            continue
        key = m.group("k")
        if current and (key in seen or (key == "NAME" and seen)):
            supplies.append(current)
            current, seen = [], set()
        current.append((key, m.group("v").strip()))
        seen.add(key)
    if current:
        supplies.append(current)
    return [_one_supply(pairs) for pairs in supplies]


def parse_power_supply_uevent(text: str) -> dict[str, Any]:
    """Parse a power-supply uevent file into one dict (the first supply when several).

    Returns ``{}`` when nothing matches. Never raises.
    """
    supplies = parse_power_supply_uevents(text)
    return supplies[0] if supplies else {}
