"""Android ``dumpsys meminfo <pid|package>`` (``dumpsys-meminfo``).

One record per ``** MEMINFO in pid N [name] **`` block:

* ``pid``, ``process``;
* ``total_pss_kb``, ``total_rss_kb`` (when printed: Android 10+ has an ``Rss
  Total`` column and a ``TOTAL RSS:`` summary; older builds have neither),
  ``total_swap_pss_kb`` / ``total_swap_kb``;
* ``rows``: every category row of the main table (``Native Heap``, ``Dalvik
  Heap``, ``.so mmap``, ..., ``TOTAL``) as ``{column_kb: value}``, column names
  built from the two header lines (``pss_total_kb``, ``private_dirty_kb``,
  ``swap_pss_dirty_kb``, ``rss_total_kb``, ``heap_size_kb``, ...);
* ``summary``: the App Summary rows as ``{"pss_kb": .., "rss_kb": ..}``;
* ``dalvik_details`` when that section is printed.

Numbers are assigned to columns by position (values are right-aligned under
their header), so rows with blank cells (no heap columns, ``Unknown`` with
only an Rss value) land in the right place. The system-wide ``dumpsys meminfo``
summary lines ``Total RAM:``, ``Free RAM:``, ``Used RAM:``, ``Lost RAM:`` are
read into ``total_ram_kb`` etc. (one extra record when no process block exists).
"""

from __future__ import annotations

import re
from typing import Any

from melt.parsers._num import to_int

_BLOCK = re.compile(r"\*\*\s*MEMINFO in pid\s+(?P<pid>\d+)\s*\[(?P<name>[^\]]*)\]")
_DASHES = re.compile(r"-{3,}")
_NUM = re.compile(r"(?<![\w.])-?\d+(?![\w.])")
_TOTALS = re.compile(r"(TOTAL(?: [A-Z]+)*(?: \(KB\))?)\s*:\s*(-?\d+)")
_SYSTEM = re.compile(r"^\s*(Total|Free|Used|Lost) RAM:\s*(-?[\d,]+)\s*K", re.MULTILINE)


def _columns(header_lines: list[str], dash_line: str) -> list[tuple[int, int, str]]:
    cols = []
    for dash in _DASHES.finditer(dash_line):
        words = []
        for h in header_lines:
            for w in re.finditer(r"\S+", h):
                if w.end() > dash.start() and w.start() < dash.end() + 1:
                    words.append(w.group())
        name = "_".join(words).lower().replace("swappss", "swap_pss").replace("(kb)", "")
        cols.append((dash.start(), dash.end(), (name or f"col{len(cols)}") + "_kb"))
    return cols


def _assign(line: str, cols: list[tuple[int, int, str]]) -> tuple[str, dict[str, int]]:
    nums = list(_NUM.finditer(line))
    if not nums or not cols:
        return line.strip(), {}
    label = line[: nums[0].start()].strip().rstrip(":")
    values: dict[str, int] = {}
    for n in nums:
        end = n.end()
        best = min(cols, key=lambda c: (0 if c[0] <= end - 1 < c[1] + 1 else 1, abs(c[1] - end)))
        value = to_int(n.group())
        if value is not None:
            values.setdefault(best[2], value)
    return label, values


def _parse_block(lines: list[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    rows: dict[str, dict[str, int]] = {}
    summary: dict[str, dict[str, int]] = {}
    details: dict[str, dict[str, int]] = {}
    cols: list[tuple[int, int, str]] = []
    mode = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _DASHES.search(line) and i >= 1 and mode in (None, "summary-header"):
            if mode is None:
                cols = _columns(lines[max(0, i - 2):i], line)
                mode = "table"
            else:
                heads = [(m.start(), m.end(), m.group().split("(")[0].lower() + "_kb")
                         for m in re.finditer(r"\S+\(KB\)", lines[i - 1])]
                sum_cols = heads or [(0, len(line), "pss_kb")]
                mode = "summary"
            continue
        if stripped == "App Summary":
            mode = "summary-header"
            continue
        if stripped == "Dalvik Details":
            mode = "details"
            continue
        if stripped in ("Objects", "SQL", "DATABASES", "Asset Allocations"):
            mode = "done"
            continue
        if not stripped or mode in (None, "done", "summary-header"):
            continue
        if mode in ("table", "details"):
            label, values = _assign(line, cols)
            if label and values and not label.startswith("-"):
                (rows if mode == "table" else details)[label] = values
        elif mode == "summary":
            totals = _TOTALS.findall(line)
            if totals:
                for name, value in totals:
                    rec[name] = to_int(value)
                continue
            label, values = _assign(line, sum_cols)
            if label and values:
                summary[label] = values
    total_row = rows.get("TOTAL", {})
    out: dict[str, Any] = {
        "total_pss_kb": rec.get("TOTAL PSS", rec.get("TOTAL", total_row.get("pss_total_kb"))),
        "total_rss_kb": rec.get("TOTAL RSS", total_row.get("rss_total_kb")),
        "total_swap_pss_kb": rec.get("TOTAL SWAP PSS", total_row.get("swap_pss_dirty_kb")),
        "total_swap_kb": rec.get("TOTAL SWAP (KB)"),
        "rows": rows or None,
        "summary": summary or None,
        "dalvik_details": details or None,
    }
    return {k: v for k, v in out.items() if v is not None}


def parse_dumpsys_meminfo(text: str) -> list[dict[str, Any]]:
    """Parse ``dumpsys meminfo`` output; one dict per process block (see module doc).

    Returns ``[]`` when nothing matches. Never raises.
    """
    text = str(text)
    lines = text.splitlines()
    starts = [(i, m) for i, line in enumerate(lines) if (m := _BLOCK.search(line))]
    records: list[dict[str, Any]] = []
    if not starts and re.search(r"^\s*Native Heap\s+\d", text, re.MULTILINE):
        starts = [(0, None)]
    for n, (i, m) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        rec: dict[str, Any] = {}
        if m is not None:
            rec["pid"], rec["process"] = int(m.group("pid")), m.group("name")
        rec.update(_parse_block(lines[i + (1 if m is not None else 0):end]))
        records.append(rec)
    system = {f"{k.lower()}_ram_kb": to_int(v.replace(",", "")) for k, v in _SYSTEM.findall(text)}
    system = {k: v for k, v in system.items() if v is not None}
    if system:
        if records:
            records[0].update({k: v for k, v in system.items() if k not in records[0]})
        else:
            records.append(system)
    return records
