"""Speed against quality per device: each model variant as a point, the Pareto front marked.

A *variant* is one framework, model and quantization on one device. Its
speed comes from its bench/generate cells (the median of the repetitions and
its bootstrap 95 % interval), its quality from its ``quality`` cell against
the device's common reference (a model before ``host``: the same file on this
machine's build scores every variant near 0), ``kld_mean`` when at least two
variants have one (the others are left out and named), else ``perplexity``,
with the evaluation's own ``_u95``. A variant is on the front when no other
variant of the device is at least as good on both axes and better on one.
Strings reaching a figure go through :func:`melt.report.figures.text`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Sequence

import pandas as pd

from melt.analysis.metrics import direction, label
from melt.report.figures import LEGEND_BELOW, _num, shorten, text

#: Quality axes, first choice first (lower is better for both).
QUALITY_AXES = ("kld_mean", "perplexity")
#: Speed axes drawn against quality: (metric, chart id part).
SPEED_AXES = (("decode_tps", "speed"), ("energy_per_token_decode_j", "energy"))

FRONT_COLOR = "#d62728"
POINT_COLOR = "#1f77b4"


def pareto_front(points: Sequence[tuple[float, float]], directions: tuple[int, int]) -> list[bool]:
    """Which ``(a, b)`` points no other point beats: at least as good on both, better on one.

    ``directions`` gives +1 (higher is better) or -1 (lower is better) per axis.
    """
    da, db = directions
    keyed = [(a * da, b * db) for a, b in points]  # higher is better on both now
    out = []
    for i, (a, b) in enumerate(keyed):
        beaten = any(a2 >= a and b2 >= b and (a2 > a or b2 > b)
                     for j, (a2, b2) in enumerate(keyed) if j != i)
        out.append(not beaten)
    return out


#: A quality job's ``reference`` that is the same model file on this machine's build: it checks
#: the device's build, not how much a variant loses, so it ranks below any model reference.
HOST_REFERENCE = "host"


def quality_reference(row: pd.Series | dict[str, Any]) -> str | None:
    """The ``reference`` parameter of a quality cell (``host``, a model's name) or None."""
    params = row.get("params")
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            return None
    ref = params.get("reference") if isinstance(params, dict) else None
    return None if ref is None else str(ref)


def common_reference(quality_rows: pd.DataFrame) -> str | None:
    """The reference that most quality cells were measured against, a model before ``host``."""
    refs = Counter(quality_reference(r) for _, r in quality_rows.iterrows())
    return max(refs, key=lambda ref: (ref != HOST_REFERENCE, refs[ref], str(ref))) if refs else None


def _variant(row: pd.Series) -> str:
    parts = [row.get("model"), row.get("quantization")]
    return " ".join(str(p) for p in parts if p and p == p)


def _first(rows: pd.DataFrame, metric: str) -> pd.Series | None:
    if metric not in rows.columns:
        return None
    have = rows.dropna(subset=[metric])
    if have.empty:
        return None
    return have.sort_values("n", ascending=False, kind="stable").iloc[0]


def variant_points(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per (run, device) with at least two variants that have speed and quality.

    Each entry: ``device``, ``run_label``, ``quality`` (the axis metric), ``reference``
    (what every variant's quality was measured against: :func:`common_reference`),
    ``left_out`` (variants without that axis' metric against it),
    ``variants`` (``name``, the quality value and ``u95``, and per speed axis
    its median, ``ci_low``, ``ci_high``). ``table`` is the report's summary
    table (one row per cell).
    """
    if table.empty or "kind" not in table.columns:
        return []
    out = []
    keys = ["run_label", "device_label", "framework", "model", "quantization"]
    for (run_label, device), dev_rows in table.groupby(["run_label", "device_label"], sort=True):
        quality_rows = dev_rows[dev_rows["kind"] == "quality"]
        speed_rows = dev_rows[dev_rows["kind"] != "quality"]
        if quality_rows.empty or speed_rows.empty:
            continue
        # every point of a chart is measured against one reference
        ref = common_reference(quality_rows)
        quality_rows = quality_rows[[quality_reference(r) == ref for _, r in quality_rows.iterrows()]]
        variants = []
        for vkey, q in quality_rows.groupby(keys[2:], sort=True, dropna=False):
            match = speed_rows
            for k, v in zip(keys[2:], vkey):
                match = match[(match[k] == v) | (match[k].isna() & (v != v))]
            entry: dict[str, Any] = {"name": _variant(q.iloc[0]), "quality_rows": q, "speed": {}}
            for metric, _ in SPEED_AXES:
                r = _first(match, metric)
                if r is not None:
                    entry["speed"][metric] = {"median": float(r[metric]),
                                              "ci_low": float(r[f"{metric}_ci_low"]),
                                              "ci_high": float(r[f"{metric}_ci_high"])}
            if entry["speed"]:
                variants.append(entry)
        # the first axis at least two variants have; a variant without it (a reference with
        # another tokenizer has no KLD) is left out of the chart and named under it
        axis = next((m for m in QUALITY_AXES
                     if sum(_first(v["quality_rows"], m) is not None for v in variants) >= 2), None)
        if axis is None:
            continue
        left_out = [v["name"] for v in variants if _first(v["quality_rows"], axis) is None]
        variants = [v for v in variants if _first(v["quality_rows"], axis) is not None]
        for v in variants:
            r = _first(v.pop("quality_rows"), axis)
            u = r.get(f"{axis}_u95") if r is not None else None
            v["quality"] = float(r[axis])
            v["u95"] = float(u) if u is not None and u == u else None
        out.append({"device": device, "run_label": run_label, "quality": axis, "reference": ref,
                    "variants": variants, "left_out": left_out})
    return out


def tradeoff_views(table: pd.DataFrame) -> tuple[list[dict[str, Any]], list[str]]:
    """The trade-off charts (``{"id", "title", "figure", "front"}``) and one sentence per chart."""
    charts, sentences = [], []
    for group in variant_points(table):
        qm = group["quality"]
        where = group["device"] + (f" ({group['run_label']})" if group["run_label"] else "")
        for metric, part in SPEED_AXES:
            have = [v for v in group["variants"] if metric in v["speed"]]
            if len(have) < 2:
                continue
            on = pareto_front([(v["speed"][metric]["median"], v["quality"]) for v in have],
                              (direction(metric), direction(qm)))
            front = [v["name"] for v, f in zip(have, on) if f]
            versus = f"{label(qm)} from {group['reference']}" if group["reference"] else label(qm)
            title = f"{label(metric)} against {versus} on {where}"
            ident = f"tradeoff-{part}-{len(charts)}"
            charts.append({"id": ident, "title": title, "front": front,
                           "figure": _figure(have, on, metric, qm, where, group["reference"])})
            better = "faster" if direction(metric) > 0 else "more frugal"
            sentences.append(f"{where}, {label(metric)} against {versus}: "
                             f"{', '.join(front)} {'is' if len(front) == 1 else 'are'} on the front "
                             f"(no other variant is both {better} and closer to the reference"
                             f"{'' if qm.startswith('kld') else ' text'})"
                             + (f"; left out, without a {label(qm)} against {group['reference']}: "
                                f"{', '.join(group['left_out'])}" if group["left_out"] else "") + ".")
    return charts, sentences


def _figure(variants: list[dict[str, Any]], on: list[bool], metric: str, qm: str,
            where: str, reference: str | None) -> dict[str, Any]:
    # a point's name is written towards the middle of the chart, so the edges do not cut it
    middle = (min(v["quality"] for v in variants) + max(v["quality"] for v in variants)) / 2

    def trace(points: list[dict[str, Any]], name: str, color: str, symbol: str) -> dict[str, Any]:
        speed = [p["speed"][metric] for p in points]
        return {
            "type": "scatter", "mode": "markers+text", "name": name,
            "x": [p["quality"] for p in points], "y": [s["median"] for s in speed],
            "text": [text(p["name"]) for p in points],
            "textposition": ["top right" if p["quality"] < middle else "top left" for p in points],
            "marker": {"color": color, "symbol": symbol, "size": 10},
            "error_x": {"type": "data", "array": [_num(p["u95"]) or 0.0 for p in points]},
            "error_y": {"type": "data", "symmetric": False,
                        "array": [max(0.0, s["ci_high"] - s["median"]) for s in speed],
                        "arrayminus": [max(0.0, s["median"] - s["ci_low"]) for s in speed]},
            "hovertemplate": (f"%{{text}}<br>{label(qm)}: %{{x:.4g}} ± %{{error_x.array:.2g}}"
                              f"<br>{label(metric)}: %{{y:.4g}}<extra></extra>"),
        }

    front = sorted((v for v, f in zip(variants, on) if f), key=lambda v: v["quality"])
    rest = [v for v, f in zip(variants, on) if not f]
    data = [trace(rest, "beaten", POINT_COLOR, "circle")] if rest else []
    data.append(trace(front, "on the front", FRONT_COLOR, "diamond"))
    data.append({"type": "scatter", "mode": "lines", "name": "Pareto front", "hoverinfo": "skip",
                 "x": [v["quality"] for v in front], "y": [v["speed"][metric]["median"] for v in front],
                 "line": {"color": FRONT_COLOR, "dash": "dot", "width": 1}})
    unit = "J/token" if metric.endswith("_j") else "tokens/s"
    return {"data": data, "layout": {
        "title": {"text": f"{text(label(metric))} against {text(label(qm))}"
                          f"<br><sub>{text(shorten(where, 60))}"
                          f"{' · reference ' + text(shorten(reference, 40)) if reference else ''}</sub>"},
        "height": 420, "margin": {"l": 60, "r": 20, "t": 60, "b": 40},
        "xaxis": {"title": {"text": f"{label(qm)} (lower is closer to the reference)"}},
        "yaxis": {"title": {"text": f"{label(metric)} ({unit})"}},
        "legend": dict(LEGEND_BELOW), "showlegend": True,
    }}

