"""Heartbeats of running farm jobs: a dead worker host's job fails within :data:`LOST_BOUND_S`.

While a job runs, its worker host keeps a key ``melt:farm:alive:<run_id>:<job_id>``
fresh: the task writes it when it takes the job, the supervisor of the host
(``melt farm worker``, a thread of its own, not the process running the job)
rewrites it every :data:`BEAT_INTERVAL_S` while that device's Celery worker
process is alive, and the key expires :data:`BEAT_TTL_S` after the last write.
The record's note deletes it.

The submitter reads the keys of its pending jobs every :data:`CHECK_INTERVAL_S`.
A job whose heartbeat it has seen is *started*; a started job whose heartbeat
it has not seen change for :data:`LOST_AFTER_S` (by the submitter's own
clock, so the hosts' clocks do not matter) is recorded as failed with
"worker lost (no heartbeat from HOST for N s)", however long the broker's
visibility timeout is.

The bound, from the moment a host dies: its last beat was seen at most
``CHECK_INTERVAL_S`` (plus one poll of the run's list, about 1 s) later, the
job is lost ``LOST_AFTER_S`` after that, found at the next check: 20 + 2 * 3 =
26 s, stated as :data:`LOST_BOUND_S` = 30 s.

A heartbeat is another host's word: each value is read only up to
:data:`MAX_BEAT_BYTES` (a larger one is dropped by Redis, unread), must be
signed with the farm key as a ``heartbeat`` of this run and job, and counts
as fresh only when it was issued after every earlier beat of the same host,
so a copy of an old beat written again keeps nothing alive.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from melt.farm.signing import FarmKeys, MessageRefused, sign, verify

#: How often a worker host rewrites the heartbeat of a running job (s).
BEAT_INTERVAL_S = 5.0
#: A heartbeat key expires this long after its last write (s).
BEAT_TTL_S = 20
#: How often the submitter reads the heartbeats of its pending jobs (s).
CHECK_INTERVAL_S = 2.0
#: A started job whose heartbeat did not change for this long is lost (s).
LOST_AFTER_S = 20.0
#: A dead host's job is recorded as failed at most this long after the host died (s).
LOST_BOUND_S = 30.0
#: The largest heartbeat value read (bytes).
MAX_BEAT_BYTES = 4096
#: How long a signed heartbeat verifies (s): well past its key's life, well short of a job message's.
_SIGNED_FOR_S = 300
#: Characters of a host name shown as they are (others become ``?``).
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
#: Keys read per round trip.
_BATCH = 500

# For each key: nil when absent, its size (a number) when over ARGV[1] bytes, else its value.
_READ = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('STRLEN', key)
  if n == 0 then out[i] = false
  elseif n > tonumber(ARGV[1]) then out[i] = n
  else out[i] = redis.call('GET', key) end
end
return out
"""


def alive_key(run_id: str, job_id: str) -> str:
    return f"melt:farm:alive:{run_id}:{job_id}"


def beat(client: Any, keys: FarmKeys, run_id: str, job_id: str, device: str, *, host: str | None = None) -> None:
    """Write (refresh) the heartbeat of ``job_id`` of ``run_id``, running on ``device`` of this host."""
    body = {"run_id": run_id, "job_id": job_id, "device": device, "host": host or socket.gethostname()}
    envelope = sign(body, "heartbeat", keys, ttl_s=_SIGNED_FOR_S)
    client.set(alive_key(run_id, job_id), json.dumps(envelope, separators=(",", ":")), ex=BEAT_TTL_S)


@dataclass(frozen=True)
class Beat:
    """One verified heartbeat: the host that wrote it and when it was issued (the host's clock, epoch s)."""

    host: str
    issued_at: float


def read_beats(client: Any, keys: FarmKeys, run_id: str, job_ids: list[str]) -> dict[str, Beat]:
    """The verified heartbeats of ``job_ids`` of ``run_id``; a job without a usable one is absent.

    Absent: no key, a value over :data:`MAX_BEAT_BYTES`, not JSON, not signed
    with this farm's key as a heartbeat, or naming another run or job.
    """
    out: dict[str, Beat] = {}
    for start in range(0, len(job_ids), _BATCH):
        batch = job_ids[start:start + _BATCH]
        replies = client.eval(_READ, len(batch), *[alive_key(run_id, j) for j in batch], MAX_BEAT_BYTES)
        for job_id, raw in zip(batch, replies or []):
            if not isinstance(raw, (str, bytes)):
                continue  # absent, or too large (its size came back)
            found = parse_beat(raw, keys, run_id, job_id)
            if found is not None:
                out[job_id] = found
    return out


def parse_beat(raw: str | bytes, keys: FarmKeys, run_id: str, job_id: str) -> Beat | None:
    """The heartbeat in ``raw`` if it is a signed one of ``job_id`` of ``run_id``, else ``None``."""
    if len(raw) > MAX_BEAT_BYTES:
        return None
    try:
        envelope = verify(json.loads(raw), "heartbeat", keys, max_bytes=MAX_BEAT_BYTES)
    except (ValueError, MessageRefused):
        return None
    body = envelope["body"]
    host = body.get("host")
    if body.get("run_id") != run_id or body.get("job_id") != job_id or not isinstance(host, str):
        return None
    return Beat(_UNSAFE.sub("?", host[:255]) or "?", float(envelope["iat"]))


@dataclass
class _Seen:
    host: str
    fresh_at: float  # the submitter's monotonic clock
    issued: dict[str, float] = field(default_factory=dict)  # host -> latest issue time seen


class LostJobs:
    """Which started jobs stopped beating (pure: the caller gives the beats and the clock)."""

    def __init__(self, lost_after_s: float = LOST_AFTER_S):
        self.lost_after_s = lost_after_s
        self._seen: dict[str, _Seen] = {}

    def started(self, job_id: str) -> bool:
        return job_id in self._seen

    def observe(self, beats: dict[str, Beat], pending: set[str], now: float) -> dict[str, str]:
        """Take one reading (``beats`` of the ``pending`` jobs, at monotonic time ``now``).

        Returns ``{job_id: reason}`` for each started job lost by now (each
        once: it is forgotten). A beat is fresh when its host issued it after
        every beat of that host seen so far for the job.
        """
        lost: dict[str, str] = {}
        for job_id in list(self._seen):
            if job_id not in pending:
                del self._seen[job_id]
        for job_id in pending:
            found, seen = beats.get(job_id), self._seen.get(job_id)
            if found is not None and (seen is None or found.issued_at > seen.issued.get(found.host, float("-inf"))):
                if seen is None:
                    seen = self._seen[job_id] = _Seen(found.host, now)
                seen.host, seen.fresh_at = found.host, now
                seen.issued[found.host] = found.issued_at
                seen.issued = dict(list(seen.issued.items())[-4:])  # a job moves between few hosts
            elif seen is not None and now - seen.fresh_at >= self.lost_after_s:
                lost[job_id] = (f"worker lost (no heartbeat from {seen.host} for {now - seen.fresh_at:.0f} s); "
                                "`melt run --resume` runs it again")
                del self._seen[job_id]
        return lost
