"""Report views of the streamed workloads: per-turn tables and sustained-run charts.

Conversation jobs carry ``turns`` (one row per replayed user turn) and
sustained jobs ``series`` (tok/s per window beside temperature, frequency and
power); see docs/results-format.md. Strings reaching a figure go through
:func:`melt.report.figures.text`; tables are escaped by the template.
"""

from __future__ import annotations

from typing import Any, Sequence

from melt.analysis.metrics import format_value
from melt.report.figures import LEGEND_BELOW, THROTTLE_COLOR, _num, shorten, text

#: (column in a turn row, header, metric name used for formatting)
TURN_COLUMNS = (
    ("turn", "turn", None),
    ("context_tokens", "context tokens", None),
    ("prompt_tokens", "prefilled tokens", None),
    ("cached_tokens", "cached tokens", None),
    ("gen_tokens", "generated tokens", None),
    ("ttft_ms", "TTFT ms", "ttft_ms"),
    ("prefill_tps", "prefill tok/s", "prefill_tps"),
    ("decode_tps", "decode tok/s", "decode_tps"),
    ("e2e_ms", "end to end ms", "e2e_ms"),
    ("energy_j", "energy J", "energy_j"),
)


def _cell(row: dict[str, Any], key: str, metric: str | None) -> str:
    v = _num(row.get(key))
    if v is None:
        return "–"
    if metric is None:
        return f"{int(v)}" if float(v).is_integer() else f"{v:g}"
    return format_value(metric, v)


def turn_tables(jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table per conversation job with turns: ``{"title", "headers", "rows"}``."""
    out = []
    for j in jobs:
        record = j["record"]
        turns = record.get("turns") or []
        if j["status"] != "ok" or not turns:
            continue
        groups: dict[Any, list[dict[str, Any]]] = {}
        for t in turns:
            groups.setdefault(t.get("conversation"), []).append(t)
        totals = {t.get("conversation"): t for t in record.get("conversation_totals") or []}
        for conv, rows in groups.items():
            total = totals.get(conv)
            footer = None
            if total:
                footer = ["total", _cell(total, "context_tokens_final", None),
                          *[_cell(total, k, m) for k, _, m in TURN_COLUMNS[2:5]], "–", "–", "–",
                          _cell(total, "e2e_ms", "e2e_ms"), _cell(total, "energy_j", "energy_j")]
            out.append({
                "footer": footer,
                "title": f"{j['device']} · {j['model']} · {j['workload']} · conversation {conv} · rep {j['repetition']}",
                "simulated": j["simulated"], "labels": j.get("labels", ()),
                "headers": [h for _, h, _ in TURN_COLUMNS],
                "rows": [[_cell(r, k, m) for k, _, m in TURN_COLUMNS] for r in rows],
            })
    return out


def sustained_charts(jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chart per sustained job: tok/s and temperature over time, throttled time shaded."""
    charts = []
    for j in jobs:
        record = j["record"]
        series = record.get("series") or []
        if j["status"] != "ok" or not series:
            continue
        t0 = _num(series[0].get("start_s")) or 0.0
        mid = [((_num(r.get("start_s")) or 0.0) + (_num(r.get("end_s")) or 0.0)) / 2 - t0 for r in series]
        data = [{"type": "scatter", "mode": "lines+markers", "name": "tok/s", "x": mid,
                 "y": [_num(r.get("tps")) for r in series], "yaxis": "y", "line": {"color": "#2ca02c"}}]
        # windows without a temperature reading are left out, not drawn as breaks in the line
        temps = [(x, _num(r.get("temp_c"))) for x, r in zip(mid, series) if _num(r.get("temp_c")) is not None]
        if temps:
            data.append({"type": "scatter", "mode": "lines+markers" if len(temps) == 1 else "lines",
                         "name": "temperature °C", "x": [x for x, _ in temps], "y": [y for _, y in temps],
                         "yaxis": "y2", "line": {"color": "#ff7f0e", "dash": "dot"}})
        shapes = []
        for iv in record.get("throttled_intervals") or []:
            a, b = _num(iv.get("start_s")), _num(iv.get("end_s"))
            if a is not None and b is not None:
                shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": a - t0, "x1": max(b, a) - t0,
                               "y0": 0, "y1": 1, "fillcolor": THROTTLE_COLOR, "opacity": 0.15,
                               "line": {"width": 0}, "layer": "below"})
        m = record.get("metrics") or {}
        subtitle = " · ".join(x for x in (
            f"peak {format_value('decode_tps_peak', m['decode_tps_peak'])} tok/s" if "decode_tps_peak" in m else "",
            f"sustained {format_value('decode_tps_sustained', m['decode_tps_sustained'])} tok/s"
            if "decode_tps_sustained" in m else "",
            "throttled (shaded)" if shapes else "not throttled") if x)
        title = f"{j['device']} · {j['model']} · {j['workload']} · rep {j['repetition']}"
        layout = {"title": {"text": text(shorten(title, 80)) + "<br><sub>" + text(subtitle) + "</sub>"},
                  "height": 380, "margin": {"l": 60, "r": 60, "t": 70, "b": 50},
                  "xaxis": {"title": {"text": "time since the first request (s)"}},
                  "yaxis": {"title": {"text": "tokens/s"}, "rangemode": "tozero"},
                  "yaxis2": {"title": {"text": "temperature (°C)"}, "overlaying": "y", "side": "right"},
                  "shapes": shapes, "legend": dict(LEGEND_BELOW)}
        charts.append({"id": f"sustained-{len(charts)}", "title": title, "figure": {"data": data, "layout": layout}})
    return charts
