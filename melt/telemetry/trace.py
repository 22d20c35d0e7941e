"""Turn the runner's files into a trace: one DataFrame row per sampler tick.

Columns (units in the names, see docs/results-format.md): ``t_s`` (seconds on
the device clock since the job's ``begin`` mark), then ``power_w``,
``current_ua`` (positive while discharging), ``voltage_uv``, ``battery_pct``,
``battery_temp_c``, ``temp_<zone>_c``, ``cpufreq_cpu<N>_khz``,
``cpufreq_max_cpu<N>_khz``, ``rss_bytes``, ``cpu_util_pct`` and any
``rail_<name>_w``. Slow channels are read every few ticks; the rows between
hold NaN for them (nothing is filled in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from melt.parsers.thermal import normalise_temp_c
from melt.telemetry.channels import Channel, ChannelPlan

#: /proc/stat cpu fields the runner writes: user nice system idle iowait irq softirq steal
_BUSY = (0, 1, 2, 5, 6, 7)
_IDLE = (3, 4)


@dataclass
class Trace:
    """A parsed job folder."""

    frame: pd.DataFrame
    marks: list[tuple[float, str]]  # (t_s, name), relative to begin
    t0_device_s: float  # absolute device time of the begin mark
    clock: str  # "realtime" or "uptime"
    peak_hwm_bytes: int | None = None
    sampler_cpu_s: float | None = None
    sampler_elapsed_s: float | None = None
    ticks: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    def mark(self, name: str) -> float | None:
        """Time (t_s) of the first mark called ``name``."""
        for t, n in self.marks:
            if n == name:
                return t
        return None

    @property
    def sample_rate_hz(self) -> float | None:
        """Achieved rate of the fast channels (ticks per second)."""
        t = self.frame["t_s"].to_numpy()
        if t.size < 2 or t[-1] <= t[0]:
            return None
        return (t.size - 1) / float(t[-1] - t[0])

    @property
    def sampler_cpu_pct(self) -> float | None:
        """CPU used by the sampler, in percent of one core.

        0.0 when it used less than one clock tick (its resolution, usually
        10 ms); ``None`` only when its CPU time or lifetime was not recorded.
        """
        if self.sampler_cpu_s is None or not self.sampler_elapsed_s:
            return None
        return 100.0 * self.sampler_cpu_s / self.sampler_elapsed_s


def parse_meta(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def parse_marks(text: str) -> list[tuple[float, str]]:
    """``TIME NAME`` lines -> [(seconds, name)] (absolute device times)."""
    marks = []
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            try:
                marks.append((float(parts[0].replace(",", ".")), parts[1].strip()))
            except ValueError:
                continue
    return marks


def _num(word: str) -> float:
    try:
        value = float(word)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _convert(ch: Channel, raw: np.ndarray) -> np.ndarray:
    if ch.convert == "tenths":
        return raw / 10.0
    if ch.convert == "temp_auto":
        return np.array([normalise_temp_c(v) if np.isfinite(v) else np.nan for v in raw], dtype=float)
    return raw * ch.factor


def parse_samples(samples: str, marks: str, meta: str, plan: ChannelPlan) -> Trace:
    """Build a :class:`Trace` from the runner's ``samples``, ``marks`` and ``meta`` text.

    Lines that do not have the expected number of fields (a tick cut short
    when the sampler was killed) are dropped. Raises ``ValueError`` when there
    is no ``begin`` mark.
    """
    info = parse_meta(meta)
    abs_marks = parse_marks(marks)
    begin = next((t for t, n in abs_marks if n == "begin"), None)
    if begin is None:
        raise ValueError("the runner left no begin mark")
    pagesize = float(info.get("pagesize") or 4096)
    clk = float(info.get("clk_tck") or 100)
    nf, ns = len(plan.fast), len(plan.slow)
    fast_rows: list[list[float]] = []
    slow_rows: list[list[float]] = []
    hwm_kb = 0.0
    cost: list[float] | None = None
    for line in samples.splitlines():
        parts = line.split()
        if not parts:
            continue
        kind = parts[0]
        if kind == "F" and len(parts) == nf + 3:
            fast_rows.append([_num(w) for w in parts[1:]])
        elif kind == "S" and len(parts) == ns + 10:
            slow_rows.append([_num(w) for w in parts[1:]])
        elif kind == "H" and len(parts) == 4:
            v = _num(parts[3])
            if np.isfinite(v):
                hwm_kb = max(hwm_kb, v)
        elif kind == "C" and len(parts) == 7:
            cost = [_num(w) for w in parts[1:]]

    fast = np.array(fast_rows, dtype=float).reshape(-1, nf + 2)
    slow = np.array(slow_rows, dtype=float).reshape(-1, ns + 9)
    fcols: dict[str, Any] = {"t": fast[:, 0]}
    for i, ch in enumerate(plan.fast):
        fcols[ch.column] = _convert(ch, fast[:, 1 + i])
    fcols["rss_bytes"] = fast[:, -1] * pagesize
    fdf = pd.DataFrame(fcols)
    scols: dict[str, Any] = {"t": slow[:, 0]}
    for i, ch in enumerate(plan.slow):
        scols[ch.column] = _convert(ch, slow[:, 1 + i])
    cpu = slow[:, 1 + ns:]
    if len(cpu) >= 2:
        busy = cpu[:, list(_BUSY)].sum(axis=1)
        total = busy + cpu[:, list(_IDLE)].sum(axis=1)
        dbusy, dtotal = np.diff(busy), np.diff(total)
        with np.errstate(invalid="ignore", divide="ignore"):
            util = np.where(dtotal > 0, 100.0 * dbusy / dtotal, np.nan)
        scols["cpu_util_pct"] = np.concatenate(([np.nan], util))
    sdf = pd.DataFrame(scols)
    df = fdf.merge(sdf, on="t", how="outer") if len(sdf) else fdf
    df = df.sort_values("t", kind="stable").reset_index(drop=True)
    if {"current_ua", "voltage_uv"} <= set(df.columns) and "power_w" not in df.columns:
        df.insert(1, "power_w", df["current_ua"] * df["voltage_uv"] * 1e-12)
    for col in [c for c in df.columns if c.startswith("rail_") and c.endswith("_v")]:
        stem = col[:-2]
        if f"{stem}_a" in df.columns and f"{stem}_w" not in df.columns:
            df[f"{stem}_w"] = df[col] * df[f"{stem}_a"]
    rails = [f"{stem}_w" for stem in plan.power_rails if f"{stem}_w" in df.columns]
    if rails and "power_w" not in df.columns:
        df.insert(1, "power_w", df[rails].sum(axis=1, min_count=len(rails)))
    df.insert(0, "t_s", df.pop("t") - begin)
    df = df[[c for c in _ordered(df.columns)]]
    if "rss_bytes" in df.columns and df["rss_bytes"].isna().all():
        df = df.drop(columns=["rss_bytes"])

    trace = Trace(
        frame=df,
        marks=[(t - begin, n) for t, n in abs_marks],
        t0_device_s=begin,
        clock=info.get("clock", "realtime"),
        peak_hwm_bytes=int(hwm_kb * 1024) if hwm_kb > 0 else None,
        meta=info,
    )
    if cost is not None and len(fast):
        t_end, u, s, cu, cs, ticks = cost
        trace.sampler_cpu_s = (u + s + cu + cs) / clk
        trace.sampler_elapsed_s = float(t_end - fast[0, 0])
        trace.ticks = int(ticks) if np.isfinite(ticks) else 0
    return trace


_ORDER = ("t_s", "power_w", "current_ua", "voltage_uv", "battery_pct", "battery_temp_c")


def _ordered(columns: Any) -> list[str]:
    cols = list(columns)

    def key(c: str) -> tuple[int, str]:
        if c in _ORDER:
            return (_ORDER.index(c), "")
        for rank, prefix in enumerate(("rail_", "temp_", "cpufreq_cpu", "cpufreq_max_", "cooling_",
                                       "rss_bytes", "cpu_util_pct"), start=len(_ORDER)):
            if c.startswith(prefix):
                return (rank, _natural(c))
        return (99, c)

    return sorted(cols, key=key)


def _natural(name: str) -> str:
    """``cpufreq_cpu10_khz`` after ``cpufreq_cpu9_khz``."""
    import re

    return re.sub(r"\d+", lambda m: m.group(0).zfill(6), name)


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The trace as Parquet bytes (for ``Execution.files['trace.parquet']``)."""
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
