"""On-Device Power Monitor (Pixel 6 and later): rail energy per phase from counters.

The runner reads ``/proc/uptime``, then ``/sys/bus/iio/devices/iio:device*/energy_value``
at every mark (``MELT_MARK_CMD``), then ``/proc/uptime`` again; each block
in ``markdata`` starts with ``@ TIME MARK`` and ``uptime_before=SECONDS``,
holds the counters (parsed by :func:`melt.parsers.odpm.parse_odpm`) and ends
with ``uptime=SECONDS``.
The counters are cumulative (µW·s), so a phase's energy is the difference
between its end and start marks.

Each iio device stamps its counters with the time they were last refreshed
(``T=``, ms since boot). The uptime read just before them dates the mark on
that clock, so it says how stale they were at the mark (a counter refreshed
while being read is newer than the mark: negative staleness). Taking the
uptime read after them instead would count the time the read itself took
(long on a busy device) as missing energy. Older runs have only that one; :func:`melt.telemetry.uncertainty.counter_energy`
adds the missing slice at the end, removes the one before the start and
bounds both (``odpm_energy_<phase>_j_u95``). Rails that belong to the SoC
(CPU clusters, GPU, TPU, memory, interconnect, always-on core) are also
summed as ``odpm_soc_energy_<phase>_j``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from melt.parsers.odpm import parse_odpm
from melt.telemetry.uncertainty import counter_energy

#: rail names of the SoC on Pixel phones (s2mpg1x PMICs) and similar layouts
SOC_RAIL = re.compile(r"CPUCL|VDD_CPU|G3D|GPU|TPU|VDD_INT|VDD_MIF|DDR|VDD_MEM|VDDQ_MEM|AOC|VDD_CAM|VDD2H|VDD2L",
                      re.IGNORECASE)
#: the counters' unit (1 µW·s) in joules
COUNTER_J = 1e-6
#: accuracy assumed for ODPM counters (percent): the rails' shunts are calibrated per device
ODPM_GAIN_PCT = 0.5


@dataclass
class MarkCounters:
    """Counters read at one mark: rail -> joules, rail -> refresh time (s since boot), uptimes."""

    joules: dict[str, float] = field(default_factory=dict)
    refreshed_s: dict[str, float] = field(default_factory=dict)
    uptime_s: float | None = None  # read after the counters
    uptime_before_s: float | None = None  # read before them, right at the mark
    time_s: float = 0.0  # the mark's time (device clock)

    def staleness_s(self) -> float:
        """How long before the mark the oldest counter was refreshed (0 when unknown).

        Negative when every counter was refreshed after the mark (during the read).
        """
        ref = self.uptime_before_s if self.uptime_before_s is not None else self.uptime_s
        if ref is None or not self.refreshed_s:
            return 0.0
        stale = ref - min(self.refreshed_s.values())
        return stale if self.uptime_before_s is not None else max(0.0, stale)


def is_soc_rail(name: str) -> bool:
    """True for rails that feed the SoC (CPU, GPU, TPU, memory, interconnect)."""
    return bool(SOC_RAIL.search(name))


def read_marks(markdata: str) -> list[tuple[str, MarkCounters]]:
    """Every mark block in order: (mark name, counters)."""
    out: list[tuple[str, MarkCounters]] = []
    name: str | None = None
    block: list[str] = []
    when = 0.0

    def flush() -> None:
        if name is None:
            return
        mc = MarkCounters(time_s=when)
        for line in block:
            key, _, value = line.partition("=")
            if key in ("uptime", "uptime_before"):
                try:
                    setattr(mc, f"{key}_s", float(value.replace(",", ".")))
                except ValueError:
                    pass
        for r in parse_odpm("\n".join(b for b in block if not b.startswith("uptime"))):
            if r.get("energy_uws") is None:
                continue
            mc.joules[r["rail"]] = r["energy_uws"] * COUNTER_J
            if r.get("timestamp_ms"):
                mc.refreshed_s[r["rail"]] = r["timestamp_ms"] / 1000.0
        if mc.joules:
            out.append((name, mc))

    for line in markdata.splitlines():
        if line.startswith("@ "):
            flush()
            parts = line.split(None, 2)
            name, block = (parts[2].strip() if len(parts) == 3 else None), []
            try:
                when = float(parts[1].replace(",", "."))
            except (IndexError, ValueError):
                when = 0.0
        else:
            block.append(line)
    flush()
    return out


def counters_at_marks(markdata: str) -> dict[str, dict[str, float]]:
    """``{mark name: {rail: joules}}`` (the first reading of each mark name)."""
    out: dict[str, dict[str, float]] = {}
    for name, mc in read_marks(markdata):
        out.setdefault(name, mc.joules)
    return out


def phase_energy(markdata: str, phases: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """(``{"odpm_energy_<phase>_j": J, ..._u95, "odpm_soc_energy_<phase>_j": J}``, per-rail detail)
    for phases bounded by marks."""
    marks = read_marks(markdata)
    metrics: dict[str, float] = {}
    detail: dict[str, Any] = {}
    for phase in phases:
        ia = next((i for i, (n, _) in enumerate(marks) if n == f"{phase}_start"), None)
        ib = next((i for i, (n, _) in enumerate(marks) if n == f"{phase}_end"), None)
        if ia is None or ib is None or ib <= ia:
            continue
        a, b = marks[ia][1], marks[ib][1]
        rails = {r: b.joules[r] - a.joules[r] for r in a.joules.keys() & b.joules.keys()}
        total_a = sum(a.joules[r] for r in rails)
        total_b = sum(b.joules[r] for r in rails)
        span = b.time_s - a.time_s
        inside_w = (total_b - total_a) / span if span > 0 else 0.0
        before_w = inside_w
        if ia > 0:
            prev = marks[ia - 1][1]
            gap = a.time_s - prev.time_s
            if gap > 0:
                before_w = (total_a - sum(prev.joules.get(r, 0.0) for r in rails)) / gap
        est = counter_energy(total_a, total_b, a.staleness_s(), b.staleness_s(),
                             power_before_w=before_w, power_inside_w=inside_w,
                             p_max_w=1.5 * max(inside_w, before_w, 0.0), gain_pct=ODPM_GAIN_PCT,
                             resolution_j=COUNTER_J * len(rails))
        metrics[f"odpm_energy_{phase}_j"] = est.value
        metrics[f"odpm_energy_{phase}_j_u95"] = est.u95
        soc = [r for r in rails if is_soc_rail(r)]
        if soc:
            metrics[f"odpm_soc_energy_{phase}_j"] = sum(rails[r] for r in soc)
        detail[phase] = rails
    return metrics, detail
