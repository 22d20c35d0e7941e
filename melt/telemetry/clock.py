"""Host <-> device clock offset from repeated round trips.

Each probe reads the host clock, asks the device for its clock, and reads the
host clock again. The device's reading was taken somewhere inside that round
trip, so ``offset = device - (sent + received) / 2`` is wrong by at most half
the round-trip time. The probe with the smallest round trip gives the
tightest bound; its half-RTT (plus the device clock's resolution) is the
stored uncertainty. The same idea as NTP's clock filter, kept to its core.

``device_time = host_time + offset_s``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

#: One probe: (host time before, device time, host time after), seconds.
Probe = tuple[float, float, float]


@dataclass(frozen=True)
class ClockOffset:
    """A measured offset: ``device = host + offset_s`` (seconds)."""

    offset_s: float
    uncertainty_s: float  # half the best round trip plus the device clock's resolution
    rtt_s: float  # best round trip
    probes: int
    device_clock: str  # which device clock was read ("realtime", "uptime")
    host_clock: str = "realtime"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_offset(probes: Sequence[Probe], *, resolution_s: float = 0.0,
                    device_clock: str = "realtime", host_clock: str = "realtime") -> ClockOffset:
    """The minimum-round-trip estimate over ``probes``.

    Raises ``ValueError`` with no usable probe (each needs ``after >= before``).
    """
    usable = [(after - before, device - (before + after) / 2.0)
              for before, device, after in probes if after >= before]
    if not usable:
        raise ValueError("no usable clock probe")
    rtt, offset = min(usable, key=lambda p: p[0])
    return ClockOffset(offset_s=offset, uncertainty_s=rtt / 2.0 + resolution_s, rtt_s=rtt,
                       probes=len(usable), device_clock=device_clock, host_clock=host_clock)


def measure_offset(read_device: Callable[[], float], *, n: int = 12,
                   host_clock: Callable[[], float] = time.time, resolution_s: float = 0.0,
                   device_clock: str = "realtime") -> ClockOffset:
    """Probe ``read_device`` ``n`` times against ``host_clock``; see :func:`estimate_offset`.

    ``read_device`` returns the device clock in seconds (one round trip).
    """
    probes: list[Probe] = []
    for _ in range(max(1, n)):
        before = host_clock()
        device = read_device()
        after = host_clock()
        probes.append((before, device, after))
    return estimate_offset(probes, resolution_s=resolution_s, device_clock=device_clock,
                           host_clock="realtime" if host_clock is time.time else "custom")


def parse_device_time(text: str) -> float:
    """Seconds from what a clock command printed.

    Accepts ``1700000000.123456`` (``$EPOCHREALTIME``, ``date +%s.%N``; a comma
    decimal separator too), ``1700000000123456789`` (``date +%s%N``) and
    ``/proc/uptime``'s ``12345.67 23456.78``. Raises ``ValueError`` otherwise.
    """
    word = text.strip().split()[0] if text.strip() else ""
    word = word.replace(",", ".")
    if word.isdigit() and len(word) >= 16:  # nanoseconds since the epoch
        return int(word) / 1e9
    try:
        return float(word)
    except ValueError:
        raise ValueError(f"not a clock reading: {text.strip()[:80]!r}") from None
