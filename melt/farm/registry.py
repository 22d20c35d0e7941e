"""What the farm's workers advertise in Redis, and what ``melt farm status`` reads.

Keys (all under ``melt:farm:``):

- ``devices`` hash, field ``<device>@<host>``: JSON of the device's worker —
  health (``online``, ``offline``, ``starting``), a detail line, battery and
  temperature when the device reports them, the supervisor's pid, the
  visibility timeout, and ``heartbeat_at`` (epoch s). An entry whose
  heartbeat is older than three intervals is shown as ``gone``.
- ``running`` hash, field ``<device>``: the job a device is running now.
- ``run:<run_id>`` list: a run's notes and records, oldest first.
- ``done:<run_id>`` set: job ids whose record was sent (or that the submitter gave up as lost).
- ``alive:<run_id>:<job_id>``: the signed heartbeat of a running job, expiring
  unless its host refreshes it (:mod:`melt.farm.heartbeat`).

Queue depths are the lengths of the broker's ``device.<name>`` lists.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

DEVICES_KEY = "melt:farm:devices"
RUNNING_KEY = "melt:farm:running"


def events_key(run_id: str) -> str:
    return f"melt:farm:run:{run_id}"


def done_key(run_id: str) -> str:
    return f"melt:farm:done:{run_id}"


def advertise(client: Any, device: str, host: str, info: dict[str, Any]) -> None:
    """Write (refresh) one device's entry."""
    client.hset(DEVICES_KEY, f"{device}@{host}", json.dumps({**info, "device": device, "host": host,
                                                              "heartbeat_at": time.time()}))


def withdraw(client: Any, device: str, host: str) -> None:
    client.hdel(DEVICES_KEY, f"{device}@{host}")


@dataclass
class DeviceEntry:
    device: str
    host: str
    health: str
    detail: str = ""
    queued: int = 0
    running: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "host": self.host, "health": self.health, "detail": self.detail,
                "queued": self.queued, "running": self.running,
                **{k: v for k, v in self.info.items() if k in ("battery_pct", "temp_c", "pid",
                                                                "visibility_timeout_s", "heartbeat_at")}}


def farm_status(client: Any, *, stale_after_s: float = 30.0) -> list[DeviceEntry]:
    """Every advertised device (and every device queue with waiting jobs), sorted by name."""
    now = time.time()
    running = {k: json.loads(v) for k, v in (client.hgetall(RUNNING_KEY) or {}).items()}
    entries: list[DeviceEntry] = []
    seen: set[str] = set()
    for key, raw in sorted((client.hgetall(DEVICES_KEY) or {}).items()):
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        device = info.get("device") or key.split("@", 1)[0]
        seen.add(device)
        health = info.get("health", "unknown")
        if now - float(info.get("heartbeat_at") or 0) > max(stale_after_s, 3 * float(info.get("interval_s") or 0)):
            health = "gone"
        entries.append(DeviceEntry(device, info.get("host", "?"), health, info.get("detail", ""),
                                   int(client.llen(f"device.{device}")), running.get(device), info))
    for queue in client.scan_iter(match="device.*", count=500):
        device = queue[len("device."):]
        if device not in seen and client.type(queue) == "list":
            entries.append(DeviceEntry(device, "-", "no worker", "jobs wait for a worker",
                                       int(client.llen(queue)), running.get(device)))
    return sorted(entries, key=lambda e: (e.device, e.host))
