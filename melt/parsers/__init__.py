"""Parsers for every output format melt meets: text in, records out.

Each parser is a pure function that never raises on malformed text and
reports a field that is absent from the text as missing (left out of the
record, or ``None``), never as 0. Records are plain JSON-serialisable dicts
whose keys carry their units (``decode_tps``, ``temp_c``, ``res_bytes``).

``KINDS`` maps each kind name to a callable returning a list of records;
:func:`parse` detects the kind when it is not given. The modules (one per
format family) are the API the rest of melt uses directly:

=========================  ====================================================
kind                       function
=========================  ====================================================
``llamacpp-timings``       :func:`melt.parsers.llamacpp.parse_timings`
``llama-bench``            :func:`melt.parsers.llama_bench.parse_llama_bench`
``mlc-stats``              :func:`melt.parsers.mlc.parse_mlc_stats`
``tegrastats``             :func:`melt.parsers.tegrastats.parse_tegrastats`
``dumpsys-battery``        :func:`melt.parsers.battery.parse_dumpsys_battery`
``power-supply-uevent``    :func:`melt.parsers.battery.parse_power_supply_uevents`
``dumpsys-thermalservice`` :func:`melt.parsers.thermal.parse_dumpsys_thermalservice`
``thermal-zones``          :func:`melt.parsers.thermal.parse_thermal_zones`
``toybox-top``             :func:`melt.parsers.top.parse_top`
``dumpsys-meminfo``        :func:`melt.parsers.meminfo.parse_dumpsys_meminfo`
``getprop``                :func:`melt.parsers.getprop.parse_getprop`
``odpm-energy``            :func:`melt.parsers.odpm.parse_odpm`
``dumpsys-power``          :func:`melt.parsers.power.parse_dumpsys_power`
``melt-marks``             :func:`melt.parsers.marks.parse_marks`
``llama-perplexity``       :func:`melt.parsers.perplexity.parse_perplexity`
=========================  ====================================================
"""

from __future__ import annotations

from typing import Any, Callable

from melt.errors import ParseError, UnknownNameError
from melt.parsers.battery import parse_dumpsys_battery, parse_power_supply_uevents
from melt.parsers.detect import detect_kind
from melt.parsers.getprop import parse_getprop
from melt.parsers.llama_bench import parse_llama_bench
from melt.parsers.llamacpp import parse_timings
from melt.parsers.marks import parse_marks
from melt.parsers.meminfo import parse_dumpsys_meminfo
from melt.parsers.mlc import parse_mlc_stats
from melt.parsers.odpm import parse_odpm
from melt.parsers.tegrastats import parse_tegrastats
from melt.parsers.thermal import parse_thermal_zones, thermalservice_records
from melt.parsers.perplexity import parse_perplexity
from melt.parsers.power import parse_dumpsys_power
from melt.parsers.top import parse_top

Records = list[dict[str, Any]]


def _one(parser: Callable[[str], dict[str, Any]]) -> Callable[[str], Records]:
    def wrapped(text: str) -> Records:
        record = parser(text)
        return [record] if record else []

    wrapped.__doc__ = parser.__doc__
    wrapped.__name__ = parser.__name__
    return wrapped


KINDS: dict[str, Callable[[str], Records]] = {
    "llamacpp-timings": parse_timings,
    "llama-bench": parse_llama_bench,
    "mlc-stats": parse_mlc_stats,
    "tegrastats": parse_tegrastats,
    "dumpsys-battery": _one(parse_dumpsys_battery),
    "power-supply-uevent": parse_power_supply_uevents,
    "dumpsys-thermalservice": thermalservice_records,
    "thermal-zones": parse_thermal_zones,
    "toybox-top": parse_top,
    "dumpsys-meminfo": parse_dumpsys_meminfo,
    "getprop": _one(parse_getprop),
    "odpm-energy": parse_odpm,
    "dumpsys-power": _one(parse_dumpsys_power),
    "melt-marks": parse_marks,
    "llama-perplexity": _one(parse_perplexity),
}


def parse(text: str, kind: str | None = None) -> tuple[str, Records]:
    """Parse ``text`` as ``kind`` (detected when ``None``); return ``(kind, records)``.

    Raises :class:`melt.errors.UnknownNameError` for a kind name that is not in
    :data:`KINDS`, and :class:`melt.errors.ParseError` when no kind can be
    detected. A known kind that finds nothing returns an empty list.
    """
    if kind is None:
        kind = detect_kind(text)
        if kind is None:
            raise ParseError(
                "could not recognise the text as any known output kind; "
                f"pass one explicitly (kinds: {', '.join(KINDS)})"
            )
    elif kind not in KINDS:
        raise UnknownNameError("parser kind", kind, list(KINDS))
    return kind, KINDS[kind](text)


__all__ = ["KINDS", "Records", "detect_kind", "parse"]
