"""Phase marks that melt's patched llama.cpp prints (``melt-mark`` lines).

Each boundary is one line on stderr (see
``frameworks/llama.cpp/patches/0002-phase-marks.patch``)::

    melt-mark prefill_start realtime=1764456000.123456 boottime=8123.456789 test=1 rep=1
    melt-mark prefill_end realtime=1764456000.561234 boottime=8123.894567 test=1 rep=1 tokens=128

:func:`parse_marks` gives one record per line: ``name``, ``realtime_s``,
``boottime_s`` (when printed) and every other ``key=value`` (integers as
``int``). :func:`mark_windows` pairs them into phase windows.
"""

from __future__ import annotations

import re
from typing import Any

_LINE = re.compile(r"melt-mark\s+([a-z_]+)((?:\s+[a-z_]+=\S+)*)\s*$")
_PAIR = re.compile(r"([a-z_]+)=(\S+)")
_CLOCKS = {"realtime": "realtime_s", "boottime": "boottime_s"}
PHASES = ("prefill", "decode")


def parse_marks(text: str) -> list[dict[str, Any]]:
    """``melt-mark`` lines of ``text``, in order; anything else is ignored.

    A line without a readable ``realtime`` is dropped. Never raises.
    """
    out: list[dict[str, Any]] = []
    for line in (text or "").splitlines():
        at = line.find("melt-mark ")
        if at < 0:
            continue
        m = _LINE.match(line[at:].rstrip())
        if not m:
            continue
        record: dict[str, Any] = {"name": m.group(1)}
        for key, value in _PAIR.findall(m.group(2)):
            if key in _CLOCKS:
                try:
                    record[_CLOCKS[key]] = float(value)
                except ValueError:
                    pass
            elif value.lstrip("-").isdigit():
                record[key] = int(value)
            else:
                record[key] = value
        if isinstance(record.get("realtime_s"), float):
            out.append(record)
    return out


def mark_windows(marks: list[dict[str, Any]], clock: str = "realtime") -> list[dict[str, Any]]:
    """Pair start and end marks into windows: ``{phase, start, end, tokens?, ...}``.

    ``clock`` is ``realtime`` or ``boottime`` (the clock the times are taken
    from; marks without it are skipped). A decode window without its own
    ``decode_start`` starts at the preceding ``prefill_end``. Marks carrying
    ``test``/``rep`` or ``slot``/``task`` pair only with the same ones. A start
    without an end (a process that died mid-phase) gives no window.
    """
    key = _CLOCKS.get(clock)
    if key is None:
        raise ValueError(f"unknown clock {clock!r}: realtime or boottime")
    windows: list[dict[str, Any]] = []
    open_: dict[tuple, dict[str, Any]] = {}
    last_prefill_end: dict[tuple, float] = {}
    for mark in marks:
        t = mark.get(key)
        name = str(mark.get("name", ""))
        phase, _, edge = name.rpartition("_")
        if t is None or phase not in PHASES or edge not in ("start", "end"):
            continue
        ident = tuple(mark.get(k) for k in ("test", "rep", "slot", "task"))
        if edge == "start":
            open_[(phase, ident)] = mark
            continue
        start = open_.pop((phase, ident), None)
        t0 = start.get(key) if start is not None else None
        if t0 is None and phase == "decode":
            t0 = last_prefill_end.get(ident)
        if phase == "prefill":
            last_prefill_end[ident] = t
        if t0 is None or t < t0:
            continue
        window = {"phase": phase, "start": float(t0), "end": float(t)}
        window.update({k: v for k, v in mark.items()
                       if k not in ("name", "realtime_s", "boottime_s")})
        windows.append(window)
    return windows
