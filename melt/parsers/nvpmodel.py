"""NVIDIA Jetson ``nvpmodel -q`` and ``jetson_clocks --show`` output.

``nvpmodel -q`` prints ``NV Power Mode: NAME`` and the mode id on the next
line (``--verbose`` adds ``NVPM VERB:`` lines, ignored here).
``jetson_clocks --show`` prints one ``cpuN: Online=1 Governor=... MinFreq=...
MaxFreq=... CurrentFreq=...`` line per core plus GPU and EMC lines; the clocks
are pinned (jetson_clocks is on) when every online core's MinFreq equals its
MaxFreq.
"""

from __future__ import annotations

import re
from typing import Any

_MODE = re.compile(r"NV Power Mode:\s*(?P<name>\S+)")
_CPU = re.compile(r"^cpu(?P<n>\d+):\s+Online=(?P<online>\d)(?P<rest>.*)$", re.M)
_KV = re.compile(r"(\w+)=(\S+)")


def parse_nvpmodel_query(text: str) -> dict[str, Any]:
    """``{"mode_name": "MAXN", "mode_id": 0}``; keys the text lacks are left out. Never raises."""
    out: dict[str, Any] = {}
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip() and not ln.startswith("NVPM")]
    for i, line in enumerate(lines):
        m = _MODE.search(line)
        if m:
            out["mode_name"] = m.group("name")
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                out["mode_id"] = int(lines[i + 1])
    return out


def parse_jetson_clocks_show(text: str) -> dict[str, Any]:
    """``{"pinned": bool, "cpus": {n: {...}}, "gpu": {...}, "emc": {...}, "mode_name": ...}``."""
    text = str(text)
    cpus: dict[int, dict[str, Any]] = {}
    for m in _CPU.finditer(text):
        info: dict[str, Any] = {"online": m.group("online") == "1"}
        info.update({k.lower(): v for k, v in _KV.findall(m.group("rest"))})
        cpus[int(m.group("n"))] = info
    out: dict[str, Any] = {}
    if cpus:
        out["cpus"] = cpus
        online = [c for c in cpus.values() if c["online"] and "minfreq" in c and "maxfreq" in c]
        if online:
            out["pinned"] = all(c["minfreq"] == c["maxfreq"] for c in online)
    for name in ("GPU", "EMC"):
        m = re.search(rf"^{name}\s+(.*)$", text, re.M)
        if m:
            out[name.lower()] = {k.lower(): v for k, v in _KV.findall(m.group(1))}
    out.update(parse_nvpmodel_query(text))
    return out
