"""Plotly figures of the report, as plain dicts (no validation pass, so 1,000 jobs stay fast).

Every user-provided string that reaches a figure goes through :func:`text`:
Plotly renders a subset of HTML in labels, so names are entity-escaped and
Plotly shows them back as the literal characters.
"""

from __future__ import annotations

import base64
import html
import math
import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from melt.analysis.metrics import label
from melt.report.downsample import channel_line

PHASE_COLORS = {"load": "#9e9e9e", "prefill": "#1f77b4", "decode": "#2ca02c", "idle": "#e0e0e0"}
THROTTLE_COLOR = "#d62728"


def text(value: Any) -> str:
    """A user string made safe for Plotly's label markup (``<`` shows as ``<``, runs nothing)."""
    return html.escape("" if value is None else str(value), quote=False)


def typed(values: np.ndarray, dtype: str = "f4") -> dict[str, str]:
    """A Plotly typed-array spec: base64 of little-endian ``dtype`` values (4 bytes a float)."""
    arr = np.ascontiguousarray(np.asarray(values, dtype="<" + dtype))
    return {"dtype": dtype, "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _scale(metric: str) -> tuple[float, str]:
    """Display divisor and unit for a metric's axis."""
    if metric.endswith("_bytes"):
        return 2**20, "MiB"
    unit = {"_tps": "tokens/s", "_ms": "ms", "_j": "J", "_c": "°C", "_w": "W"}
    for suffix, u in unit.items():
        if metric.endswith(suffix):
            return 1.0, ("J/token" if "per_token" in metric else u)
    return 1.0, ""


def bar_chart(table: pd.DataFrame, metric: str, x_key: str, series_keys: Sequence[str],
              title: str) -> dict[str, Any] | None:
    """Grouped bars of ``metric`` medians with their CI as error bars.

    Where the table has ``<metric>_u95`` (a measured energy's own 95%
    half-width), the bars reach at least that far from the median.

    ``table`` is a summary table (one row per cell; ``<metric>``,
    ``<metric>_ci_low``, ``<metric>_ci_high`` columns, plus the ``x_key`` and
    ``series_keys`` label columns, already display strings). None when the
    metric is absent.
    """
    if metric not in table.columns or table[metric].isna().all():
        return None
    scale, unit = _scale(metric)
    rows = table.dropna(subset=[metric])
    data = []
    series = rows.groupby(list(series_keys), sort=True, dropna=False)
    for key, g in series:
        key = key if isinstance(key, tuple) else (key,)
        name = " · ".join(str(k) for k in key if k is not None and k == k and str(k))
        med = g[metric].astype(float) / scale
        lo = g[f"{metric}_ci_low"].astype(float) / scale
        hi = g[f"{metric}_ci_high"].astype(float) / scale
        if f"{metric}_u95" in g.columns:  # the sensor's own interval (docs/measurement.md)
            u95 = g[f"{metric}_u95"].astype(float).fillna(0.0) / scale
            lo = np.minimum(lo, med - u95)
            hi = np.maximum(hi, med + u95)
        data.append({
            "type": "bar", "name": text(name), "x": [text(x) for x in g[x_key]],
            "y": [_num(v) for v in med],
            "error_y": {"type": "data", "symmetric": False,
                        "array": [_num(v) for v in (hi - med).clip(lower=0)],
                        "arrayminus": [_num(v) for v in (med - lo).clip(lower=0)]},
            "customdata": [[_num(a), _num(b)] for a, b in zip(lo, hi)],
            "hovertemplate": (f"%{{x}}<br>%{{fullData.name}}<br>{label(metric)}: %{{y:.4g}} {unit}"
                              "<br>95% interval [%{customdata[0]:.4g}, %{customdata[1]:.4g}]<extra></extra>"),
        })
    layout = {
        "title": {"text": text(title)}, "barmode": "group", "height": 420,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 80},
        "yaxis": {"title": {"text": f"{label(metric)} ({unit})" if unit else label(metric)}},
        "xaxis": {"type": "category"},
        "legend": {"orientation": "h", "y": -0.25}, "showlegend": len(data) > 1,
    }
    return {"data": data, "layout": layout}


# Trace panels: (title, unit divisor, channel predicate). Every channel of a panel is drawn
# from its own readings (slow ones are read every few ticks): see downsample.channel_line.
_PANELS = (
    ("Power (W)", 1.0, lambda c: c == "power_w" or (c.startswith("rail_") and c.endswith("_w"))),
    ("Temperature (°C)", 1.0, lambda c: c.startswith("temp_") and c.endswith("_c")),
    ("Frequency (MHz)", 1000.0, lambda c: re.fullmatch(r"cpufreq_cpu\d+_khz", c) is not None),
    ("Utilisation (%)", 1.0, lambda c: c in ("cpu_util_pct", "gpu_util_pct", "emc_util_pct")),
    ("Memory (MiB)", 2**20, lambda c: c == "rss_bytes"),
)


#: Most channels drawn per panel (phones have many thermal zones and CPUs).
MAX_PER_PANEL = 4


def _pick(frame: pd.DataFrame, cols: list[str]) -> list[str]:
    """Up to :data:`MAX_PER_PANEL` channels: exact duplicates dropped (CPUs of one cluster
    share a frequency), then the ones reaching the highest values kept."""
    unique: list[str] = []
    for c in cols:
        if not any(frame[c].equals(frame[u]) for u in unique):
            unique.append(c)
    if len(unique) > MAX_PER_PANEL:
        peaks = {c: frame[c].max() for c in unique}
        unique = sorted(unique, key=lambda c: -(peaks[c] if peaks[c] == peaks[c] else -np.inf))
        unique = sorted(unique[:MAX_PER_PANEL], key=cols.index)
    return unique


def trace_channels(frame: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """The panels a trace can fill: ``[(panel title, [channel, ...]), ...]``.

    A channel with no reading at all (a sensor that never answered) is left
    out, and a panel with no channel left is not drawn.
    """
    cols = [c for c in frame.columns if c != "t_s" and _has_reading(frame[c])]
    out = []
    for title, _, pred in _PANELS:
        chosen = _pick(frame, sorted((c for c in cols if pred(c)), key=_natural))
        if title.startswith("Power") and "power_w" not in frame.columns and \
                {"current_ua", "voltage_uv"} <= set(cols):
            chosen = ["power_w", *chosen][:MAX_PER_PANEL]  # derived below from current and voltage
        if chosen:
            out.append((title, chosen))
    return out


def _has_reading(column: pd.Series) -> bool:
    """True when a trace column holds at least one finite number."""
    try:
        return bool(np.isfinite(column.to_numpy(dtype=float)).any())
    except (TypeError, ValueError):
        return False


def _natural(name: str) -> tuple:
    """Sort key putting cpu2 before cpu10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def trace_data(frame: pd.DataFrame, job: dict[str, Any], n_points: int) -> dict[str, Any] | None:
    """Compact, downsampled trace of one job for the report's lazy trace charts.

    Returns ``{"panels": [{"title", "series": [{"name", "x", "y", "lone"}]}],
    "phases", "throttled", "samples", "points"}`` with typed arrays, or None
    without a time column or a channel to draw. Each series is its channel's
    own readings (:func:`melt.report.downsample.channel_line`: at most about
    ``n_points`` points, NaN only where the channel had no reading for a long
    time), in the panel's unit (MHz, MiB); ``lone`` asks for markers where a
    stretch holds a single reading. ``samples`` counts the readings of the
    drawn channels, ``points`` the points drawn.
    """
    if "t_s" not in frame.columns or frame.empty:
        return None
    frame = frame.sort_values("t_s", kind="stable")
    if "power_w" not in frame.columns and {"current_ua", "voltage_uv"} <= set(frame.columns):
        frame = frame.assign(power_w=frame["current_ua"].abs() * frame["voltage_uv"] * 1e-12)
    panels = trace_channels(frame)
    if not panels:
        return None
    divisors = {title: div for title, div, _ in _PANELS}
    t = frame["t_s"].to_numpy(dtype=float)
    out_panels = []
    samples = points = 0
    for title, cols in panels:
        series = []
        for c in cols:
            values = frame[c].to_numpy(dtype=float) / divisors[title]
            x, y, lone = channel_line(t, values, n_points)
            samples += int(np.isfinite(values).sum())
            points += len(x)
            series.append({"name": text(c), "x": typed(x), "y": typed(y), "lone": lone})
        out_panels.append({"title": title, "series": series})
    return {
        "panels": out_panels,
        "phases": [{"name": text(p.get("name")), "start_s": _num(p.get("start_s")),
                    "end_s": _num(p.get("end_s"))} for p in job.get("phases") or []
                   if _num(p.get("start_s")) is not None and _num(p.get("end_s")) is not None],
        "throttled": [[_num(i.get("start_s")), _num(i.get("end_s"))]
                      for i in job.get("throttled_intervals") or []
                      if _num(i.get("start_s")) is not None and _num(i.get("end_s")) is not None],
        "samples": samples,
        "points": points,
    }
