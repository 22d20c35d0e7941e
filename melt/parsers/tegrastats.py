"""NVIDIA Jetson ``tegrastats`` lines (``tegrastats``).

One record per sample line, for every Jetson generation seen in the wild:
TX1 (legacy ``cpu [a%,b%]@freq``, ``EMC``, ``GR3D``), TX2, Nano, Xavier, Orin;
root (``EMC_FREQ x%@f GR3D_FREQ y%@f``) and non-root (``EMC_FREQ 0%`` or no
EMC/GR3D at all); with or without a leading timestamp; rails with or without
an ``mW`` suffix, named ``POM_5V_IN``, ``VDD_IN``, ``VDD_CPU_CV``,
``VIN_SYS_5V0``, ``GPU``, ... in any order (no rail is assumed to be the total).

Fields: ``timestamp`` (as printed), ``ram_used_mb``, ``ram_total_mb``,
``swap_used_mb``, ``swap_total_mb``, ``cpu_util_pct`` (list, ``None`` for a
core that is ``off``), ``cpu_freq_mhz`` (list), ``gpu_util_pct``,
``gpu_freq_mhz`` (first GPC clock), ``gpu_gpc_freq_mhz`` (list, Orin),
``emc_util_pct``, ``emc_freq_mhz``, ``temps_c`` ({zone: °C}; the ``-256C``
"sensor offline" value becomes ``None``), ``rails_mw`` ({rail: current mW}),
``rails_avg_mw`` ({rail: average mW}). A field not printed is left out.
"""

from __future__ import annotations

import re
from typing import Any

from melt.parsers._num import to_float, to_int

_TIME = re.compile(r"^\s*(?P<t>\d{2}-\d{2}-\d{4}\s+\d{2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?)")
_MEM = re.compile(r"\b(?P<name>RAM|SWAP)\s+(?P<used>\d+)/(?P<total>\d+)\s*(?P<unit>[kKMG])B")
_CPU = re.compile(r"\bCPU\s*\[(?P<cores>[^\]]*)\](?:\s*@\s*(?P<freq>\d+))?", re.IGNORECASE)
_ENGINE = re.compile(
    r"\b(?P<name>EMC_FREQ|EMC|GR3D_FREQ|GR3D)\s+(?:(?P<pct>\d+(?:\.\d+)?)%)?"
    r"(?:@\s*(?:\[(?P<list>[\d,\s]*)\]|(?P<freq>\d+)))?"
)
_TEMP = re.compile(r"(?<![\w@])(?P<name>[A-Za-z][\w\-]*)@(?P<v>-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(
    r"(?<![\w/])(?P<name>[A-Z][A-Z0-9_]*)\s+(?P<cur>\d+)(?:mW)?/(?P<avg>\d+)(?:mW)?(?![\w/])"
)
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "EMC", "EMC_FREQ", "GR3D", "GR3D_FREQ", "APE", "MTS"}
_TO_MB = {"k": 1 / 1024, "K": 1 / 1024, "M": 1, "G": 1024}


def _num_mb(value: str, unit: str) -> float | int | None:
    v = to_int(value)
    if v is None:
        return None
    factor = _TO_MB.get(unit, 1)
    return v if factor == 1 else round(v * factor, 3)


def _cpus(match: re.Match[str]) -> tuple[list[float | None], list[float | None]]:
    utils: list[float | None] = []
    freqs: list[float | None] = []
    shared = to_int(match.group("freq")) if match.group("freq") else None
    for entry in match.group("cores").split(","):
        entry = entry.strip()
        m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)%)?\s*(?:@\s*(\d+))?", entry)
        if entry.lower() == "off" or not entry or not m or not (m.group(1) or m.group(2)):
            utils.append(None)
            freqs.append(None)
            continue
        utils.append(to_float(m.group(1)) if m.group(1) else None)
        freqs.append(to_int(m.group(2)) if m.group(2) else shared)
    return utils, freqs


def parse_tegrastats_line(line: str) -> dict[str, Any] | None:
    """Parse one tegrastats line; ``None`` when the line is not a tegrastats sample.

    A line counts as a sample when it carries ``RAM used/totalMB`` or a
    ``CPU [...]`` list. Never raises.
    """
    line = str(line)
    mems = {m.group("name"): m for m in _MEM.finditer(line)}
    cpu = _CPU.search(line)
    if "RAM" not in mems and cpu is None:
        return None
    rec: dict[str, Any] = {}
    stamp = _TIME.match(line)
    if stamp:
        rec["timestamp"] = " ".join(stamp.group("t").split())
    for name, m in mems.items():
        key = name.lower()
        rec[f"{key}_used_mb"] = _num_mb(m.group("used"), m.group("unit"))
        rec[f"{key}_total_mb"] = _num_mb(m.group("total"), m.group("unit"))
    if cpu:
        rec["cpu_util_pct"], rec["cpu_freq_mhz"] = _cpus(cpu)
    for eng in _ENGINE.finditer(line):
        prefix = "emc" if eng.group("name").startswith("EMC") else "gpu"
        if f"{prefix}_util_pct" in rec or f"{prefix}_freq_mhz" in rec:
            continue
        if eng.group("pct") is not None:
            rec[f"{prefix}_util_pct"] = to_float(eng.group("pct"))
        if eng.group("list") is not None:
            clocks = [to_int(c) for c in eng.group("list").split(",") if c.strip()]
            clocks = [c for c in clocks if c is not None]
            if clocks:
                rec[f"{prefix}_freq_mhz"] = clocks[0]
                rec[f"{prefix}_gpc_freq_mhz"] = clocks
        elif eng.group("freq") is not None:
            rec[f"{prefix}_freq_mhz"] = to_int(eng.group("freq"))
    temps: dict[str, float | None] = {}
    for t in _TEMP.finditer(line):
        value = to_float(t.group("v"))
        temps[t.group("name")] = None if value is not None and value <= -256 else value
    if temps:
        rec["temps_c"] = temps
    rails: dict[str, int] = {}
    avgs: dict[str, int] = {}
    for r in _RAIL.finditer(line):
        name = r.group("name")
        if name in _NOT_RAILS:
            continue
        cur, avg = to_int(r.group("cur")), to_int(r.group("avg"))
        if cur is not None:
            rails[name] = cur
        if avg is not None:
            avgs[name] = avg
    if rails:
        rec["rails_mw"] = rails
    if avgs:
        rec["rails_avg_mw"] = avgs
    return {k: v for k, v in rec.items() if v is not None}


def parse_tegrastats(text: str) -> list[dict[str, Any]]:
    """Parse every tegrastats sample line in ``text``, skipping prompts and junk.

    Returns one dict per sample line, in order. Never raises.
    """
    records = []
    for line in str(text).splitlines():
        rec = parse_tegrastats_line(line)
        if rec:
            records.append(rec)
    return records
