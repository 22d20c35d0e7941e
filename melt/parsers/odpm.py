"""Android On-Device Power Monitor energy counters (``odpm-energy``).

Read from ``/sys/bus/iio/devices/iio:device*/energy_value`` (Pixel 4 and
later)::

    t=349894
    CH0(T=349894)[S10M_VDD_TPU], 5578756

and from ``dumpsys powerstats``-style lines naming a rail and its energy.
Values are cumulative energy since boot in µW·s (= µJ); ``T=``/``t=`` is ms
since boot. One record per rail reading: ``rail``, ``energy_uws``,
``timestamp_ms``, ``channel`` (``CH0`` ...), ``device`` (``iio:device0`` when a
command line or path names it), and ``avg_power_mw`` = energy / time since
boot (µW·s / ms = mW), a derived value kept for quick checks.
"""

from __future__ import annotations

import re
from typing import Any

from melt.parsers._num import to_int

_T = re.compile(r"^\s*t\s*=\s*(\d+)\s*$")
_CH = re.compile(r"(?P<ch>CH\d+)\s*(?:\(\s*T\s*=\s*(?P<t>\d+)\s*\))?\s*\[(?P<rail>[^\]]+)\]\s*,\s*(?P<e>\d+)")
_DEVICE = re.compile(r"(iio:device\d+)")
_POWERSTATS = re.compile(
    r"(?:rail|channel)(?:Name)?\s*[=:]\s*(?P<rail>[\w\-.]+).*?\benergy(?:_uws|UWs|Uws)?\s*[=:]\s*(?P<e>\d+)",
    re.IGNORECASE,
)
_TS = re.compile(r"\btimestamp(?:_ms|Ms)?\s*[=:]\s*(\d+)", re.IGNORECASE)


def parse_odpm(text: str) -> list[dict[str, Any]]:
    """Parse ODPM energy counters; one dict per rail reading, in order.

    Returns ``[]`` when nothing matches. Never raises.
    """
    records: list[dict[str, Any]] = []
    device: str | None = None
    stamp: int | None = None
    for line in str(text).splitlines():
        dev = _DEVICE.search(line.replace("\\:", ":"))
        if dev and "CH" not in line:
            device, stamp = dev.group(1), None
        t = _T.match(line)
        if t:
            stamp = to_int(t.group(1))
            continue
        ch = _CH.search(line)
        rec: dict[str, Any] | None = None
        if ch:
            ts = to_int(ch.group("t")) if ch.group("t") else stamp
            rec = {"rail": ch.group("rail").strip(), "energy_uws": to_int(ch.group("e")),
                   "timestamp_ms": ts, "channel": ch.group("ch"), "device": device}
        else:
            ps = _POWERSTATS.search(line)
            if ps:
                ts_match = _TS.search(line)
                rec = {"rail": ps.group("rail"), "energy_uws": to_int(ps.group("e")),
                       "timestamp_ms": to_int(ts_match.group(1)) if ts_match else stamp}
        if rec is None:
            continue
        if rec.get("energy_uws") is not None and rec.get("timestamp_ms"):
            rec["avg_power_mw"] = round(rec["energy_uws"] / rec["timestamp_ms"], 3)
        records.append({k: v for k, v in rec.items() if v is not None})
    return records
