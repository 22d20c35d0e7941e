"""Temperatures: sysfs thermal zones and ``dumpsys thermalservice``.

``parse_thermal_zones`` (kind ``thermal-zones``) reads listings of
``/sys/class/thermal/thermal_zone*/type`` and ``.../temp`` in the shapes people
capture them: ``cat`` with a glob (one value per line, zones in order; the
``type`` and ``temp`` listings are paired by position), ``grep . .../temp``
(``path:value``), ``paste``/``for`` loops (``path<TAB>type<TAB>...``). One
record per zone: ``zone`` (index), ``type``, ``temp_c``; plus ``mode`` when a
listing prints it. Temperatures are normalised: a magnitude of 1000 or more
is millidegrees, 150 to 999 is tenths (no zone reads 150 °C), the rest degrees;
-256 °C (Tegra's "sensor offline") is reported as missing. A bare ``cat
/sys/class/thermal/thermal_zone*/temp`` (integers only, no names) gives zones
numbered by position with a ``note`` saying what it cannot know: the types,
and the real zone numbers (the glob sorts thermal_zone10 before thermal_zone2).

``parse_dumpsys_thermalservice`` (kind ``dumpsys-thermalservice``) returns
``{"throttling_status": int | None, "sensors": [...], "cooling_devices": [...]}``:
one sensor per ``Temperature{mValue=.., mType=.., mName=.., mStatus=..}`` of
"Current temperatures from HAL", with ``name``, ``type`` (int), ``type_name``,
``value_c``, ``status``. When the HAL section is missing the sensors come
from "Cached temperatures": the last values the service saw, not a reading
of now, so each such sensor carries ``cached: True`` and ``source`` says
``cached`` (``hal`` for the HAL section, ``unlabelled`` for objects outside
both sections). The registry flattens it to one record per
sensor, each carrying ``throttling_status``.
"""

from __future__ import annotations

import re
from typing import Any

from melt.parsers._num import to_float, to_int

_ZONE = re.compile(r"thermal_zone(?P<z>\d+)")
_PATH_VALUE = re.compile(r"(?<!\S)(?P<path>[^\s:]*?thermal_zone(?P<z>\d+)(?P<file>/\w+)?)\s*[:\t ]\s*(?P<rest>.*)$")
_NUMBER_LINE = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*$")
_TYPE_LINE = re.compile(r"^\s*[A-Za-z][\w.\-]*\s*$")
_COMMAND = re.compile(r"(?:\$|#|>)\s|adb\s|cat\s|grep\s|paste\s|for\s|echo\s|^\s*\w+@[\w.-]+:")
_TEMP_OBJ = re.compile(r"Temperature\{(?P<body>[^}]*)\}")
_COOL_OBJ = re.compile(r"CoolingDevice\{(?P<body>[^}]*)\}")
_FIELD = re.compile(r"m(?P<k>\w+)\s*=\s*(?P<v>[^,}]*)")
_STATUS = re.compile(r"^\s*Thermal Status:\s*(-?\d+)", re.MULTILINE)
_BARE_NOTE = ("bare temp listing: the zone type is unknown, and the index is the shell glob's "
              "order (thermal_zone10 sorts before thermal_zone2), not the zone number")
TYPE_NAMES = {-1: "unknown", 0: "cpu", 1: "gpu", 2: "battery", 3: "skin", 4: "usb_port",
              5: "power_amplifier", 6: "bcl_voltage", 7: "bcl_current", 8: "bcl_percentage",
              9: "npu", 10: "tpu", 11: "display", 12: "modem", 13: "soc", 14: "wifi", 15: "camera",
              16: "flashlight", 17: "speaker", 18: "ambient", 19: "pogo"}


def normalise_temp_c(raw: float | None) -> float | None:
    """Millidegrees / tenths / degrees -> °C (see module doc); ``None`` stays ``None``."""
    if raw is None or raw in (-256, -2560) or raw <= -256000:
        return None  # Jetson/Tegra report an offline sensor as -256 °C
    if abs(raw) >= 1000:
        return round(raw / 1000, 3)
    if abs(raw) >= 150:
        return round(raw / 10, 2)
    return raw


def parse_thermal_zones(text: str) -> list[dict[str, Any]]:
    """Parse thermal-zone listings into one dict per zone, ordered by zone index.

    Returns ``[]`` when nothing matches. Never raises.
    """
    zones: dict[int, dict[str, Any]] = {}
    bare_types: list[str] = []
    bare_temps: list[float] = []
    block: str | None = None  # what a bare listing holds, from the command before it
    for line in str(text).splitlines():
        if not line.strip():
            continue
        pv = _PATH_VALUE.search(line)
        if pv and not _COMMAND.search(line[: pv.start()] + " "):
            zone = zones.setdefault(int(pv.group("z")), {"zone": int(pv.group("z"))})
            file = (pv.group("file") or "").lstrip("/")
            parts = pv.group("rest").split()
            if file == "temp" or (not file and parts and _NUMBER_LINE.match(parts[0])):
                if parts:
                    zone["temp_c"] = normalise_temp_c(to_float(parts[0]))
            elif file == "mode":
                zone["mode"] = parts[0] if parts else None
            elif file in ("type", ""):
                if parts:
                    zone["type"] = parts[0]
                    for extra in parts[1:]:
                        if _NUMBER_LINE.match(extra):
                            zone["temp_c"] = normalise_temp_c(to_float(extra))
                        elif extra in ("enabled", "disabled"):
                            zone["mode"] = extra
            continue
        if _ZONE.search(line) or _COMMAND.search(line):
            lowered = line.lower()
            block = "temp" if "temp" in lowered.split("thermal_zone")[-1] else (
                "type" if "type" in lowered else block)
            continue
        if _NUMBER_LINE.match(line) and block != "type":
            value = to_float(line.strip())
            if value is not None:
                bare_temps.append(value)
        elif _TYPE_LINE.match(line) and block != "temp":
            bare_types.append(line.strip())
    for i, zone_type in enumerate(bare_types):
        zones.setdefault(i, {"zone": i}).setdefault("type", zone_type)
    for i, temp in enumerate(bare_temps):
        zone = zones.setdefault(i, {"zone": i})
        zone.setdefault("temp_c", normalise_temp_c(temp))
        if "type" not in zone:
            zone["note"] = _BARE_NOTE
    return [{k: v for k, v in zones[z].items() if v is not None} for z in sorted(zones)]


def _objects(pattern: re.Pattern[str], text: str) -> list[dict[str, str]]:
    return [{f.group("k"): f.group("v").strip() for f in _FIELD.finditer(m.group("body"))}
            for m in pattern.finditer(text)]


def _sensor(fields: dict[str, str]) -> dict[str, Any]:
    kind = to_int(fields.get("Type"))
    rec = {"name": fields.get("Name") or None, "type": kind,
           "type_name": TYPE_NAMES.get(kind) if kind is not None else None,
           "value_c": to_float(fields.get("Value")), "status": to_int(fields.get("Status"))}
    return {k: v for k, v in rec.items() if v is not None}


def _section(text: str, title: str) -> str | None:
    start = text.find(title)
    if start < 0:
        return None
    rest = text[start + len(title):]
    end = re.search(r"^\S", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def parse_dumpsys_thermalservice(text: str) -> dict[str, Any]:
    """Parse ``adb shell dumpsys thermalservice``; see the module doc for the shape.

    Returns ``{"throttling_status": None, "sensors": [], "cooling_devices": []}``
    when nothing matches. Never raises.
    """
    text = str(text)
    status = _STATUS.search(text)
    hal = _section(text, "Current temperatures from HAL:")
    cached = _section(text, "Cached temperatures:")
    origin = "hal"
    source = hal if hal is not None and _TEMP_OBJ.search(hal) else None
    if source is None and cached is not None and _TEMP_OBJ.search(cached):
        source, origin = cached, "cached"
    if source is None:  # objects outside any known section
        source, origin = text, "unlabelled"
    cooling = _section(text, "Current cooling devices from HAL:") or ""
    devices = []
    for fields in _objects(_COOL_OBJ, cooling):
        dev = {"name": fields.get("Name") or None, "type": to_int(fields.get("Type")),
               "value": to_int(fields.get("Value"))}
        devices.append({k: v for k, v in dev.items() if v is not None})
    sensors = [s for s in (_sensor(f) for f in _objects(_TEMP_OBJ, source)) if s]
    if origin == "cached":
        sensors = [dict(s, cached=True) for s in sensors]
    return {
        "throttling_status": to_int(status.group(1)) if status else None,
        "source": origin,
        "sensors": sensors,
        "cooling_devices": devices,
    }


def thermalservice_records(text: str) -> list[dict[str, Any]]:
    """One record per HAL sensor, each with the device's ``throttling_status``."""
    parsed = parse_dumpsys_thermalservice(text)
    status = parsed["throttling_status"]
    records = [dict(s, throttling_status=status) if status is not None else dict(s) for s in parsed["sensors"]]
    if not records and status is not None:
        records = [{"throttling_status": status}]
    return records
