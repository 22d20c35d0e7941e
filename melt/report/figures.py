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
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from melt.analysis.metrics import label
from melt.report.downsample import shared_lines

PHASE_COLORS = {"load": "#9e9e9e", "prefill": "#1f77b4", "decode": "#2ca02c", "idle": "#e0e0e0"}
THROTTLE_COLOR = "#d62728"


def text(value: Any) -> str:
    """A user string made safe for Plotly's label markup (``<`` shows as ``<``, runs nothing)."""
    return html.escape("" if value is None else str(value), quote=False)


#: Longest legend entry and longest part of one, in characters; longer names are cut in the
#: middle (the full name is on hover).
LEGEND_CHARS, PART_CHARS = 72, 32

#: A legend laid out in rows below the plot, from the chart's left edge; rows wrap at its width.
LEGEND_BELOW = {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.18, "yanchor": "top",
                "font": {"size": 11}}


#: Most series a bar chart names in its legend; with more, each bar is named on hover only.
MAX_LEGEND_SERIES = 60


def shorten(name: str, limit: int = LEGEND_CHARS) -> str:
    """``name`` cut in the middle to at most ``limit`` characters: ``gemma-3-270m-i…-Q4_K_M``.

    Both ends are kept, since names of variants often differ only at the end.
    """
    if len(name) <= limit:
        return name
    keep = limit - 1
    head = (keep + 1) // 2
    return name[:head] + "…" + name[len(name) - (keep - head):]


def series_name(parts: Sequence[Any]) -> str:
    """A legend entry from the parts that tell series apart, each cut to :data:`PART_CHARS` or
    less, so the entry fits :data:`LEGEND_CHARS`."""
    parts = [str(p) for p in parts if p is not None and p == p and str(p)]
    if not parts:
        return "all"
    for limit in range(PART_CHARS, 7, -4):  # the longest parts give way first
        name = " · ".join(shorten(p, limit) for p in parts)
        if len(name) <= LEGEND_CHARS:
            return name
    return shorten(name)


def tick_label(value: Any) -> str:
    """An axis category as Plotly markup: the name cut to :data:`PART_CHARS`, its labels on a
    second line (``pixel-8<br>(simulated)``), so ticks stay level instead of slanting."""
    name, sep, tags = str(value).partition(" (")
    return text(shorten(name, PART_CHARS)) + ("<br>" + text(sep.strip() + tags) if sep else "")


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
    metric is absent. A series is named by the keys that differ between
    series (cut to :data:`LEGEND_CHARS` in the legend, whole on hover); the
    keys every bar shares are named once under the title.
    """
    if metric not in table.columns or table[metric].isna().all():
        return None
    scale, unit = _scale(metric)
    rows = table.dropna(subset=[metric])
    # what every bar shares goes under the title once, so the legend names what differs
    varying = [k for k in series_keys if rows[k].astype(str).nunique() > 1]
    shared = [str(v) for k in series_keys if k not in varying
              for v in rows[k].iloc[:1] if v is not None and v == v and str(v)]
    data, categories = [], {}
    series = rows.groupby(varying, sort=True, dropna=False) if varying else [((), rows)]
    for key, g in series:
        key = key if isinstance(key, tuple) else (key,)
        name = " · ".join(str(k) for k in key if k is not None and k == k and str(k)) or "all"
        categories.update((text(x), tick_label(x)) for x in g[x_key])
        med = g[metric].astype(float) / scale
        lo = g[f"{metric}_ci_low"].astype(float) / scale
        hi = g[f"{metric}_ci_high"].astype(float) / scale
        if f"{metric}_u95" in g.columns:  # the sensor's own interval (docs/measurement.md)
            u95 = g[f"{metric}_u95"].astype(float).fillna(0.0) / scale
            lo = np.minimum(lo, med - u95)
            hi = np.maximum(hi, med + u95)
        data.append({
            "type": "bar", "name": text(series_name(key)), "x": [text(x) for x in g[x_key]],
            "y": [_num(v) for v in med],
            "error_y": {"type": "data", "symmetric": False,
                        "array": [_num(v) for v in (hi - med).clip(lower=0)],
                        "arrayminus": [_num(v) for v in (med - lo).clip(lower=0)]},
            "customdata": [[_num(a), _num(b), text(name)] for a, b in zip(lo, hi)],
            "hovertemplate": (f"%{{x}}<br>%{{customdata[2]}}<br>{label(metric)}: %{{y:.4g}} {unit}"
                              "<br>95% interval [%{customdata[0]:.4g}, %{customdata[1]:.4g}]<extra></extra>"),
        })
    notes = [text(shorten(" · ".join(shared), 90))] if shared else []
    if len(data) > MAX_LEGEND_SERIES:  # a legend this long says nothing and takes seconds to lay out
        notes.append(f"{len(data)} series: hover a bar for its name")
    subtitle = f"<br><sub>{' · '.join(notes)}</sub>" if notes else ""
    layout = {
        "title": {"text": text(title) + subtitle}, "barmode": "group", "height": 420,
        "margin": {"l": 60, "r": 20, "t": 60 if notes else 50, "b": 40},
        "yaxis": {"title": {"text": f"{label(metric)} ({unit})" if unit else label(metric)}},
        "xaxis": {"type": "category", "automargin": True, "tickvals": list(categories),
                  "ticktext": list(categories.values())},
        "legend": dict(LEGEND_BELOW), "showlegend": 1 < len(data) <= MAX_LEGEND_SERIES,
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


def _arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The columns a panel can draw as float arrays, sorted by ``t_s``, with ``power_w``
    derived from current and voltage where the trace has no power column.
    Columns with no finite value (a sensor that never answered) are left out."""
    if "t_s" not in frame.columns or frame.empty:
        return {}
    t = frame["t_s"].to_numpy(dtype=float)
    order = np.argsort(t, kind="stable") if np.any(np.diff(t) < 0) else None
    out: dict[str, np.ndarray] = {}
    wanted = {"t_s"} | ({"current_ua", "voltage_uv"} if "power_w" not in frame.columns else set())
    for c in frame.columns:
        if c not in wanted and not any(pred(c) for _, _, pred in _PANELS):
            continue
        try:
            v = frame[c].to_numpy(dtype=float)
        except (TypeError, ValueError):
            continue
        v = v[order] if order is not None else v
        if c == "t_s" or np.isfinite(v).any():
            out[c] = v
    if "power_w" not in out and "current_ua" in out and "voltage_uv" in out:
        out["power_w"] = np.abs(out["current_ua"]) * out["voltage_uv"] * 1e-12
    return out


def _pick(arrays: dict[str, np.ndarray], cols: list[str]) -> list[str]:
    """Up to :data:`MAX_PER_PANEL` channels: exact duplicates dropped (CPUs of one cluster
    share a frequency), then the ones reaching the highest values kept."""
    unique: list[str] = []
    for c in cols:
        if not any(np.array_equal(arrays[c], arrays[u], equal_nan=True) for u in unique):
            unique.append(c)
    if len(unique) > MAX_PER_PANEL:
        peaks = {c: float(np.nanmax(arrays[c])) for c in unique}
        unique = sorted(unique, key=lambda c: -peaks[c])
        unique = sorted(unique[:MAX_PER_PANEL], key=cols.index)
    return unique


def _panels(arrays: dict[str, np.ndarray]) -> list[tuple[str, list[str]]]:
    cols = [c for c in arrays if c != "t_s"]
    out = []
    for title, _, pred in _PANELS:
        chosen = _pick(arrays, sorted((c for c in cols if pred(c)), key=_natural))
        if chosen:
            out.append((title, chosen))
    return out


def trace_channels(frame: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """The panels a trace can fill: ``[(panel title, [channel, ...]), ...]``.

    A channel with no reading at all (a sensor that never answered) is left
    out, and a panel with no channel left is not drawn. ``power_w`` is
    derived from current and voltage when the trace has no power column.
    """
    return _panels(_arrays(frame))


def _natural(name: str) -> tuple:
    """Sort key putting cpu2 before cpu10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def trace_data(frame: pd.DataFrame, job: dict[str, Any],
               n_points: int | Callable[[int, int], int]) -> dict[str, Any] | None:
    """Compact, downsampled trace of one job for the report's lazy trace charts.

    Returns ``{"times", "panels": [{"title", "series": [{"name", "x", "y",
    "lone"}]}], "phases", "throttled", "samples", "points"}`` with typed
    arrays, or None without a time column or a channel to draw. Each series
    is its channel's own readings (:func:`melt.report.downsample.channel_line`:
    at most about ``n_points`` points, NaN only where the channel had no
    reading for a long time), in the panel's unit (MHz, MiB); its ``x`` is an
    index into ``times``, stored once for the channels read at the same ticks
    (the fast ones, the slow ones). ``lone`` asks for markers where a stretch
    holds a single reading. ``samples`` counts the readings of the drawn
    channels, ``points`` the points drawn.

    ``n_points`` may be a function of ``(channels, time axes)`` returning the
    points per channel: the trace then embeds about ``points x (channels +
    axes)`` values, which is how the report shares its budget.
    """
    arrays = _arrays(frame)
    panels = _panels(arrays)
    if not panels:
        return None
    t = arrays["t_s"]
    chosen = [c for _, cols in panels for c in cols]
    readings = {c: np.isfinite(arrays[c]) for c in chosen}
    if callable(n_points):
        n_points = n_points(len(chosen), len({m.tobytes() for m in readings.values()}))
    scale = {title: div for title, div, _ in _PANELS}
    divisors = {c: scale[title] for title, cols in panels for c in cols}
    groups: dict[bytes, list[str]] = {}  # channels read at the same ticks are reduced together
    for c in chosen:
        groups.setdefault(readings[c].tobytes(), []).append(c)
    times, lines = [], {}
    for cols in groups.values():
        x, ys, lone = shared_lines(t, {c: arrays[c] / divisors[c] for c in cols}, n_points)
        lines.update({c: (len(times), y, lone, len(x)) for c, y in ys.items()})
        times.append(typed(x))
    out_panels = [{"title": title, "series": [{"name": text(c), "x": lines[c][0], "y": typed(lines[c][1]),
                                               "lone": lines[c][2]} for c in cols]}
                  for title, cols in panels]
    return {
        "times": times,
        "panels": out_panels,
        "phases": [{"name": text(p.get("name")), "start_s": _num(p.get("start_s")),
                    "end_s": _num(p.get("end_s"))} for p in job.get("phases") or []
                   if _num(p.get("start_s")) is not None and _num(p.get("end_s")) is not None],
        "throttled": [[_num(i.get("start_s")), _num(i.get("end_s"))]
                      for i in job.get("throttled_intervals") or []
                      if _num(i.get("start_s")) is not None and _num(i.get("end_s")) is not None],
        "samples": sum(int(readings[c].sum()) for c in chosen),
        "points": sum(lines[c][3] for c in chosen),
    }
