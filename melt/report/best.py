"""Which configuration is best: the report's lead, one row per criterion.

Read from the summary table (one row per cell: medians, 95 % bootstrap
intervals and, for energies and quality, the measurement's own ``_u95``) and
from the trade-off charts' Pareto fronts. A winner whose interval overlaps
another cell's is not told apart from it: those cells are named beside it.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from melt.analysis.metrics import QUALITY_METRICS, direction, format_value, label
from melt.labels import parse_labels

#: (criterion, metrics tried in order); the first metric some cell has is the one judged
CRITERIA = (
    ("Fastest", ("decode_tps",)),
    ("Least energy per token", ("energy_per_token_decode_j",)),
    ("Best quality", ("kld_mean", "perplexity")),
)

#: At most this many cells are named as not told apart from a winner.
MAX_CLOSE = 4


def configuration(row: pd.Series | dict[str, Any]) -> str:
    """``pixel-8 · llama.cpp · gemma-3-270m Q4_K_M · bench (n_gen=32)``, with the run when several."""
    parts = [row.get("run_label"), row.get("device"), row.get("framework"),
             " ".join(str(p) for p in (row.get("model"), row.get("quantization")) if p and p == p),
             row.get("workload_short") or row.get("workload")]
    return " · ".join(str(p) for p in parts if p is not None and p == p and str(p))


def interval(row: pd.Series | dict[str, Any], metric: str) -> tuple[float, float]:
    """The 95 % interval of a cell's median, widened to the measurement's own ± where it has one."""
    med = float(row[metric])
    lo, hi = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    lo = med if lo is None or lo != lo else float(lo)
    hi = med if hi is None or hi != hi else float(hi)
    u = row.get(f"{metric}_u95")
    if u is not None and u == u:
        lo, hi = min(lo, med - float(u)), max(hi, med + float(u))
    return lo, hi


def _interval_text(row: pd.Series, metric: str) -> str:
    lo, hi = interval(row, metric)
    own = row.get(f"{metric}_u95")
    out = f"{format_value(metric, lo)} – {format_value(metric, hi)}"
    if own is not None and own == own:
        kind = "evaluation" if metric in QUALITY_METRICS else "sensor"
        out += f" (with the {kind}'s ± {format_value(metric, float(own))})"
    return out


def _entry(row: pd.Series, metric: str) -> dict[str, Any]:
    return {"name": configuration(row), "labels": parse_labels(row.get("labels")),
            "anchor": f"cell-{row['run_id']}-{row['cell_id']}",
            "value": format_value(metric, float(row[metric])), "interval": _interval_text(row, metric)}


def best_per_criterion(table: pd.DataFrame, tradeoffs: Sequence[dict[str, Any]] = ()
                       ) -> list[dict[str, Any]]:
    """One row per criterion some cell can answer, then one per Pareto front.

    Each row: ``criterion``, ``metric`` (its label), ``best`` (``name``,
    ``labels``, ``anchor``, ``value``, ``interval``) and ``close``: the cells
    whose interval overlaps the best one's (at most :data:`MAX_CLOSE`,
    nearest first), with ``more`` counting the rest. A front row has
    ``front`` (the variants on it) instead of ``best``. ``tradeoffs`` are the
    charts of :func:`melt.report.tradeoff.tradeoff_views`.
    """
    rows: list[dict[str, Any]] = []
    for criterion, metrics in CRITERIA:
        metric = next((m for m in metrics if m in table.columns and table[m].notna().any()), None)
        if metric is None:
            continue
        have = table.dropna(subset=[metric])
        sign = direction(metric)
        ordered = have.iloc[(have[metric].astype(float).to_numpy() * -sign).argsort(kind="stable")]
        best = ordered.iloc[0]
        lo, hi = interval(best, metric)
        close = []
        for _, r in ordered.iloc[1:].iterrows():
            lo2, hi2 = interval(r, metric)
            if lo2 <= hi and lo <= hi2:
                close.append(r)
        rows.append({"criterion": criterion, "metric": label(metric), "best": _entry(best, metric),
                     "close": [_entry(r, metric) for r in close[:MAX_CLOSE]],
                     "more": max(0, len(close) - MAX_CLOSE)})
    for chart in tradeoffs:
        rows.append({"criterion": "Pareto set", "metric": chart["title"], "front": list(chart["front"]),
                     "close": [], "more": 0})
    return rows
