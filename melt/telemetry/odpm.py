"""On-Device Power Monitor (Pixel 6 and later): rail energy per phase from counters.

The runner reads ``/sys/bus/iio/devices/iio:device*/energy_value`` at every
mark (``MELT_MARK_CMD``); each block in ``markdata`` starts with
``@ TIME MARK`` and holds the counters, parsed by
:func:`melt.parsers.odpm.parse_odpm`. The counters are cumulative (µW·s), so
a phase's energy is the difference between its end and start marks.
"""

from __future__ import annotations

from typing import Any

from melt.parsers.odpm import parse_odpm


def counters_at_marks(markdata: str) -> dict[str, dict[str, float]]:
    """``{mark name: {rail: joules}}`` (the first reading of each mark name)."""
    out: dict[str, dict[str, float]] = {}
    name: str | None = None
    block: list[str] = []

    def flush() -> None:
        if name is not None and name not in out:
            rails = {r["rail"]: r["energy_uws"] / 1e6 for r in parse_odpm("\n".join(block))
                     if r.get("energy_uws") is not None}
            if rails:
                out[name] = rails
    for line in markdata.splitlines():
        if line.startswith("@ "):
            flush()
            parts = line.split(None, 2)
            name, block = (parts[2].strip() if len(parts) == 3 else None), []
        else:
            block.append(line)
    flush()
    return out


def phase_energy(markdata: str, phases: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """(``{"odpm_energy_<phase>_j": J}``, per-rail detail) for phases bounded by marks."""
    counters = counters_at_marks(markdata)
    metrics: dict[str, float] = {}
    detail: dict[str, Any] = {}
    for phase in phases:
        a, b = counters.get(f"{phase}_start"), counters.get(f"{phase}_end")
        if not a or not b:
            continue
        rails = {r: b[r] - a[r] for r in a.keys() & b.keys()}
        metrics[f"odpm_energy_{phase}_j"] = sum(rails.values())
        detail[phase] = rails
    return metrics, detail
