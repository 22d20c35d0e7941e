"""Android ``top`` (toybox, and the older toolbox layout) (``toybox-top``).

One record per process (or thread, with ``top -H``) row: ``pid``, ``user``,
``cpu_pct``, ``res_bytes``, ``name``; plus ``tid``, ``thread`` and ``row:
"thread"`` for thread listings (``top -H``, whose header says ``Threads:``),
``state`` when printed, and ``sample`` (0, 1, ...) when the capture holds
several refreshes (``top -n 3``).

The header row decides the columns, so custom column sets (``top -o
PID,USER,%CPU,RES,NAME``) and narrow terminals work. Toybox marks the sort
column with brackets (``S[%CPU]``); markdown wrappers (``|``, ``**``,
backticks) are stripped. Sizes: ``4.1M``/``1.2G``/``980K`` are binary units;
a bare number in an ``RSS``/``RES`` column is KiB (``ps`` convention), and
toolbox's ``12345K`` is KiB too.
"""

from __future__ import annotations

import re
from typing import Any

from melt.parsers._num import to_float, to_int

_SIZE = re.compile(r"^(?P<n>\d+(?:[.,]\d+)?)(?P<u>[KMGTkmgt]?)(?:i?B)?$")
_NAME_COLS = ("ARGS", "NAME", "CMD", "COMMAND", "PROCESS", "CMDLINE", "COMM")


def _bytes(value: str) -> int | None:
    m = _SIZE.match(value.strip())
    if not m:
        return None
    number = to_float(m.group("n"))
    if number is None:
        return None
    factor = {"": 1024, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group("u").upper()]
    return int(round(number * factor))


def _clean(line: str) -> str:
    return re.sub(r"[*`|]", " ", line).replace("\x1b[7m", "").replace("\x1b[0m", "")


def _header(line: str) -> list[str] | None:
    tokens = re.sub(r"[\[\]]", " ", _clean(line)).split()
    upper = [t.upper() for t in tokens]
    if ("PID" in upper or "TID" in upper) and any(t in upper for t in ("%CPU", "CPU%", "USER", "RES", "RSS")):
        return upper
    return None


def parse_top(text: str) -> list[dict[str, Any]]:
    """Parse ``top`` output into one dict per process row, in order.

    Returns ``[]`` when no header row is found. Never raises.
    """
    records: list[dict[str, Any]] = []
    header: list[str] | None = None
    sample = -1
    for raw in str(text).splitlines():
        head = _header(raw)
        if head:
            header, sample = head, sample + 1
            continue
        if header is None:
            continue
        tokens = _clean(raw).split()
        if not tokens or not tokens[0].isdigit():
            if tokens and re.match(r"(?i)tasks:|threads:|mem:|swap:|\d+%cpu", " ".join(tokens)):
                continue
            continue
        if len(tokens) == len(header) - 1 and "PCY" in header:
            # toolbox leaves the policy column blank for kernel threads
            tokens.insert(header.index("PCY"), "")
        if len(tokens) > len(header) and header[-2:] == ["THREAD", "PROCESS"]:
            cut = len(header) - 2
            tokens = tokens[:cut] + [" ".join(tokens[cut:-1]), tokens[-1]]
        elif len(tokens) > len(header) and header[-1] in _NAME_COLS + ("THREAD",):
            tokens = tokens[: len(header) - 1] + [" ".join(tokens[len(header) - 1:])]
        row = dict(zip(header, tokens))
        rec: dict[str, Any] = {}
        if "PID" in row:
            rec["pid"] = to_int(row["PID"])
        if "TID" in row:
            rec["tid"] = to_int(row["TID"])
            rec.setdefault("pid", None)
            rec["row"] = "thread"  # top -H: one row per thread, so CPU and RES are per thread
        rec["user"] = row.get("USER") or row.get("UID")
        cpu = row.get("%CPU", row.get("CPU%"))
        rec["cpu_pct"] = to_float(cpu.rstrip("%")) if cpu is not None else None
        res = row.get("RES", row.get("RSS"))
        rec["res_bytes"] = _bytes(res) if res is not None else None
        name = next((row[c] for c in _NAME_COLS if c in row), None)
        if "THREAD" in row:
            rec["thread"] = row["THREAD"]
            name = row.get("PROCESS") or name
        rec["name"] = name
        if "S" in row and len(row["S"]) == 1 and row["S"].isalpha():
            rec["state"] = row["S"]
        rec["sample"] = sample
        rec = {k: v for k, v in rec.items() if v is not None}
        if rec.get("pid") is None and rec.get("tid") is None:
            continue
        records.append(rec)
    if all(r["sample"] == 0 for r in records):
        for r in records:
            del r["sample"]
    return records
