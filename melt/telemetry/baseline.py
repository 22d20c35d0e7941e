"""The idle baseline: when one measured earlier still stands for the device.

Sampling a device at rest for ``telemetry.idle_s`` before every job costs
that long per job, yet the idle power only changes when the device's state
does. A baseline is therefore kept per device and reused while the device
is in the state it was measured in: within ``idle_reuse.max_age_s``, the
temperature within ``max_temp_change_c``, the battery level within
``max_battery_change_pct``, and the charger neither plugged nor pulled.
Anything else, or a reading that is missing now or was missing then,
measures it again. The rules are pure functions, tested without a device.

Baselines outlive one ``melt run``: :class:`BaselineStore` keeps the last one
of each device (keyed by its properties and the state melt set on it, such as
the screen) in melt's cache, so five runs in a row measure it once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Conditions:
    """What the idle power depends on, read before a job (``None``: unknown)."""

    temp_c: float | None = None
    temp_zone: str | None = None
    battery_pct: float | None = None
    charging: bool | None = None


@dataclass(frozen=True)
class IdleBaseline:
    """An idle power measured in one job, with the conditions it was measured in."""

    power_w: float
    measured_at: str  # UTC, ISO 8601
    measured_epoch_s: float  # host wall clock (time.time()), for its age across processes
    conditions: Conditions
    job_t0_device_s: float | None = None  # the measuring job's trace origin (device clock)
    u95_w: float = 0.0  # half-width of its 95% interval

    def describe(self, now_epoch_s: float, *, reused: bool, reason: str) -> dict[str, Any]:
        """Provenance stored with each job that uses it."""
        return {
            "power_w": round(self.power_w, 6),
            "u95_w": round(self.u95_w, 6),
            "measured_at": self.measured_at,
            "measured_in": "an earlier job" if reused else "this job",
            "age_s": round(max(0.0, now_epoch_s - self.measured_epoch_s), 3),
            "conditions": {k: v for k, v in asdict(self.conditions).items() if v is not None},
            "reason": reason,
        }

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "conditions": asdict(self.conditions)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "IdleBaseline":
        """Raises ``TypeError``/``ValueError``/``KeyError`` on a malformed record."""
        cond = Conditions(**data["conditions"])
        return cls(float(data["power_w"]), str(data["measured_at"]), float(data["measured_epoch_s"]),
                   cond, data.get("job_t0_device_s"), float(data["u95_w"]))  # no interval: remeasure


class BaselineStore:
    """The last idle baseline of each device, one small JSON file per key (atomic writes)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @staticmethod
    def key(name: str, properties: dict[str, Any], state: dict[str, Any] | None) -> str:
        """What identifies a device (its config name and properties) and the state it idles in."""
        blob = json.dumps({"name": name, "device": properties, "state": state or {}},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def get(self, key: str) -> IdleBaseline | None:
        try:
            return IdleBaseline.from_json(json.loads((self.folder / f"{key}.json").read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None  # none yet, or unreadable: measure a new one

    def put(self, key: str, baseline: IdleBaseline) -> None:
        from melt.store.atomic import atomic_write_json

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.folder / f"{key}.json", baseline.to_json())
        except OSError:
            pass  # a read-only cache only costs a new baseline next time


def conditions_from_health(snapshot: dict[str, Any] | None, skin_zone: str | None = None) -> Conditions:
    """The conditions in a health snapshot (``melt.devices.state.health_snapshot``).

    Temperature: the skin zone when configured, else the fuel gauge's, else
    the hottest zone. Charging: any charger reported powered.
    """
    snap = snapshot or {}
    temps = {k: v for k, v in (snap.get("temps_c") or {}).items() if isinstance(v, (int, float))}
    battery = snap.get("battery") or {}
    temp_c, zone = None, None
    if skin_zone:
        for key, value in temps.items():
            if key.split("#", 1)[0] == skin_zone:
                temp_c, zone = float(value), skin_zone
                break
    if temp_c is None and isinstance(battery.get("temperature_c"), (int, float)):
        temp_c, zone = float(battery["temperature_c"]), "battery"
    if temp_c is None and temps:
        zone, value = max(temps.items(), key=lambda kv: kv[1])
        temp_c, zone = float(value), zone.split("#", 1)[0]
    level = battery.get("level_pct", battery.get("capacity_pct"))
    plugged = battery.get("plugged")
    charging = any(plugged.values()) if isinstance(plugged, dict) and plugged else None
    return Conditions(temp_c, zone, float(level) if isinstance(level, (int, float)) else None, charging)


def reuse_verdict(baseline: IdleBaseline | None, now: Conditions, now_epoch_s: float, *,
                  max_age_s: float, max_temp_change_c: float,
                  max_battery_change_pct: float) -> tuple[bool, str]:
    """Whether ``baseline`` still stands under ``now``; and why (or why not)."""
    if baseline is None:
        return False, "no idle baseline measured on this device yet"
    age = now_epoch_s - baseline.measured_epoch_s
    if age < -5:
        return False, "the baseline is from the future (the host clock was set back)"
    if age > max_age_s:
        return False, f"the baseline is {age:.0f} s old (limit {max_age_s:g} s)"
    then = baseline.conditions
    if now.temp_c is None or then.temp_c is None:
        return False, "no temperature reading to compare with the baseline's"
    if now.temp_zone != then.temp_zone:
        return False, f"the temperature comes from {now.temp_zone}, the baseline's from {then.temp_zone}"
    if abs(now.temp_c - then.temp_c) > max_temp_change_c:
        return False, (f"temperature moved {now.temp_c - then.temp_c:+.1f} °C since the baseline "
                       f"(limit {max_temp_change_c:g} °C)")
    if (now.battery_pct is None) != (then.battery_pct is None):
        return False, "the battery level was readable at one time only"
    if now.battery_pct is not None and then.battery_pct is not None \
            and abs(now.battery_pct - then.battery_pct) > max_battery_change_pct:
        return False, (f"battery moved {now.battery_pct - then.battery_pct:+.0f}% since the baseline "
                       f"(limit {max_battery_change_pct:g}%)")
    if now.charging != then.charging:
        return False, "the charger was plugged or pulled since the baseline"
    return True, (f"measured {age:.0f} s ago at {then.temp_c:.1f} °C"
                  + (f", battery {then.battery_pct:.0f}%" if then.battery_pct is not None else ""))
